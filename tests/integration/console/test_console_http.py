"""The console over HTTP against the real stack: who sees what (TokenReview, SubjectAccessReview),
the pages' data as the command line gives it, masking, CSRF, and run-now recorded with the caller."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from typing import Any

import requests
from conftest import MANY_BAD_ROWS, SEED_KEY_PARTS, World, harness


def get(world: World, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(world.url + path, headers=headers, timeout=60, allow_redirects=False, **kwargs)


def text(response: requests.Response) -> str:
    """The page's text without tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.text).split())


def test_no_token_is_401_with_the_sign_in_form(world: World) -> None:
    r = get(world, "/orgs")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'name="token"' in r.text
    assert get(world, "/orgs", token="not-a-token").status_code == 401


def test_the_org_admin_sees_only_the_org_it_may_get(world: World) -> None:
    r = get(world, "/orgs", world.admin.token)
    assert r.status_code == 200
    links = set(re.findall(r'href="/orgs/([^"/?]+)"', r.text))
    assert links == {world.name}
    assert world.admin.username in r.text
    r = get(world, "/orgs", world.other.token)
    assert set(re.findall(r'href="/orgs/([^"/?]+)"', r.text)) == {world.other_name}


def test_another_org_is_403_and_says_nothing_of_its_existence(world: World) -> None:
    forbidden = get(world, f"/orgs/{world.name}", world.other.token)
    missing = get(world, f"/orgs/{world.name}-does-not-exist", world.other.token)
    assert forbidden.status_code == missing.status_code == 403
    assert forbidden.text == missing.text
    for path in ("/tables/orders", "/tables/orders/rejected.csv", "/tables/orders/history?key=x"):
        r = get(world, f"/orgs/{world.name}{path}", world.other.token)
        absent = get(world, f"/orgs/{world.name}-does-not-exist{path}", world.other.token)
        assert r.status_code == absent.status_code == 403, path
        assert r.text == absent.text == forbidden.text


def test_the_org_page_shows_tables_last_runs_who_and_alerts(world: World) -> None:
    r = get(world, f"/orgs/{world.name}", world.admin.token)
    assert r.status_code == 200
    page = text(r)
    obj = harness.get_json("orgpipeline", world.name)
    for alert in obj["status"]["alerts"]:
        assert alert["message"] in page
    assert "run-now by unknown:run-now:kubectl-annotate" in page
    assert "Retention" in page and "orders" in page and "customers" in page


def test_the_table_page_has_the_chart_runs_files_and_rejected_rows(world: World) -> None:
    r = get(world, f"/orgs/{world.name}/tables/orders", world.admin.token)
    assert r.status_code == 200
    assert re.search(r'<svg [^>]*role="img"[^>]*id="quality"', r.text)
    assert re.search(r'<svg [^>]*role="img"[^>]*id="volume"', r.text)
    page = text(r)
    total = MANY_BAD_ROWS + 5  # the generated file's rows and the example's bad file's five
    assert f"{total} rejected rows" in page
    assert "page 1 of 3" in page
    assert "orders_2026-11-03_many_bad.csv" in page and "ingested" in page
    second = text(get(world, f"/orgs/{world.name}/tables/orders?page=2", world.admin.token))
    assert "page 2 of 3" in second


def test_rejected_rows_hide_pii_on_the_page(world: World) -> None:
    r = get(world, f"/orgs/{world.name}/tables/orders?page=1", world.admin.token)
    assert "[REDACTED]" in r.text
    assert "@example.com" not in r.text  # email is pii in the example's manifest


def test_the_csv_download_is_what_orgpipeline_rejected_gives_with_pii_masked(world: World) -> None:
    r = get(world, f"/orgs/{world.name}/tables/orders/rejected.csv", world.admin.token)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    cli = subprocess.run(
        [
            str(harness.BIN / "orgpipeline"),
            "rejected",
            "--org-id",
            world.org_id,
            "--table",
            "orders",
            "-o",
            "csv",
        ],
        env=world.env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    # The same file, but the console shows it to whoever may get the OrgPipeline: every
    # non-empty field of a pii column (email in the example's manifest) is masked, as on the page.
    expected = list(csv.reader(io.StringIO(cli.stdout.decode())))
    email = expected[0].index("email")
    for row in expected[1:]:
        if len(row) > email and row[email]:
            row[email] = "[REDACTED]"
    got = list(csv.reader(io.StringIO(r.content.decode())))
    assert got == expected
    assert b"@example.com" in cli.stdout and b"@example.com" not in r.content
    assert r.content.count(b"\n") == MANY_BAD_ROWS + 5 + 1


def test_record_history_shows_every_version_with_a_field_level_diff_masked(world: World) -> None:
    key = "org_{}_orders_{}".format(world.org_id, "_".join(SEED_KEY_PARTS))
    r = get(world, f"/orgs/{world.name}/tables/orders/history", world.admin.token, params={"key": key})
    assert r.status_code == 200
    page = text(r)
    assert "Version 1: INSERT" in page and "Version 2: UPDATE" in page
    assert re.search(
        r'<th scope="row">amount</th><td><del>99\.99</del></td><td><ins>89\.99</ins></td>', r.text
    )
    assert "orders_2024_01_16.csv, line 2" in page
    assert "unknown:run-now:kubectl-annotate" in page
    assert "sha256:" in page  # the pii email, pseudonymised as the reader's view shows it
    assert "@" not in page


def test_a_post_without_the_csrf_token_is_refused(world: World) -> None:
    session = requests.Session()
    session.cookies.set("orgpipeline_token", world.admin.token)
    r = session.post(
        f"{world.url}/orgs/{world.name}/tables/orders/run-now",
        data={"reason": "x"},
        allow_redirects=False,
        timeout=60,
    )
    assert r.status_code == 403
    obj = harness.get_json("orgpipeline", world.name)
    assert "orgpipeline.io/run-now" not in (obj["metadata"].get("annotations") or {})


def test_run_now_needs_patch(world: World) -> None:
    r = requests.post(
        f"{world.url}/orgs/{world.other_name}/tables/orders/run-now",
        headers={"Authorization": f"Bearer {world.other.token}"},
        data={"reason": "x"},
        allow_redirects=False,
        timeout=60,
    )
    assert r.status_code == 403
    obj = harness.get_json("orgpipeline", world.other_name)
    assert "orgpipeline.io/run-now" not in (obj["metadata"].get("annotations") or {})


def test_sign_in_keeps_the_token_in_an_httponly_strict_cookie_and_stays_on_this_site(world: World) -> None:
    for target, expected in (
        ("//evil.example/x", "/orgs"),
        ("/\\evil.example", "/orgs"),
        ("/orgs?q=a", "/orgs?q=a"),
    ):
        session = requests.Session()
        form = session.get(world.url + "/login", timeout=60)
        nonce = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert nonce is not None
        r = session.post(
            world.url + "/login",
            data={"login_csrf": nonce.group(1), "token": world.admin.token, "next": target},
            allow_redirects=False,
            timeout=60,
        )
        assert r.status_code == 303 and r.headers["Location"] == expected
        cookie = r.headers["Set-Cookie"]
        assert "orgpipeline_token=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # Without the form's nonce (a cross-site form): refused, no cookie.
    r = requests.post(
        world.url + "/login", data={"token": world.admin.token}, allow_redirects=False, timeout=60
    )
    assert r.status_code == 403 and "orgpipeline_token" not in r.headers.get("Set-Cookie", "")

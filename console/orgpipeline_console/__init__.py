"""The org admin console: a read-only web page per org, served by `orgpipeline console`.

Who sees what is Kubernetes RBAC (a TokenReview, then SubjectAccessReviews on the OrgPipeline);
data is read with the command line's own queries, in the org's own PostgreSQL session, and record
values through the same masking as the org's reader views.
"""

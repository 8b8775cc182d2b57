// Prints containerd's RuntimeDefault seccomp profile (the one its CRI plugin gives a pod with
// seccompProfile RuntimeDefault) for a process with no capabilities, as an OCI spec's
// linux.seccomp: what hack/node.py's runc run of a job container applies.
package main

import (
	"encoding/json"
	"os"

	"github.com/containerd/containerd/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(seccomp.DefaultProfile(spec)); err != nil {
		panic(err)
	}
}

package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzAnnotations feeds the CRI annotations that pick a container's role
// and its shim. A pod container always names its sandbox; the group is
// the sandbox id when there is one, else the container's own id; an
// unknown container type is an error, never a standalone container.
func FuzzAnnotations(f *testing.F) {
	f.Add("sandbox", "pod1", "c1", true)
	f.Add("container", "pod1", "c1", true)
	f.Add("container", "", "c1", true)
	f.Add("Sandbox", "x", "c", true)
	f.Add("", "", "c", false)
	f.Fuzz(func(t *testing.T, typ, sandboxID, id string, setType bool) {
		ann := map[string]string{}
		if setType {
			ann[ContainerTypeAnnotation] = typ
		}
		if sandboxID != "" {
			ann[SandboxIDAnnotation] = sandboxID
		}
		s := &specs.Spec{Annotations: ann}
		ct, err := TypeOf(s)
		switch {
		case err != nil:
			if !setType || typ == "sandbox" || (typ == "container" && sandboxID != "") {
				t.Fatalf("type %q sandbox %q: unexpected error %v", typ, sandboxID, err)
			}
		case !setType:
			if ct != Single {
				t.Fatalf("no type annotation gave %v", ct)
			}
		case typ == "sandbox":
			if ct != PodSandbox {
				t.Fatalf("sandbox gave %v", ct)
			}
		case typ == "container":
			if ct != PodContainer || sandboxID == "" {
				t.Fatalf("container (sandbox %q) gave %v", sandboxID, ct)
			}
		default:
			t.Fatalf("type %q accepted as %v", typ, ct)
		}
		g := GroupID(ann, id)
		if sandboxID != "" && g != sandboxID || sandboxID == "" && g != id {
			t.Fatalf("GroupID(%q, %q) = %q", sandboxID, id, g)
		}
	})
}

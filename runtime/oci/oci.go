// Package oci reads an OCI bundle's config.json into a validated runtime
// spec and answers the questions the shim asks of it: is this a pod
// sandbox, a pod container or a standalone container, and which sandbox
// does it belong to. It owns no state.
package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MaxSpecSize bounds config.json.
const MaxSpecSize = 4 << 20

// CRI annotations (containerd's internal/cri/annotations).
const (
	ContainerTypeAnnotation = "io.kubernetes.cri.container-type"
	SandboxIDAnnotation     = "io.kubernetes.cri.sandbox-id"
	SandboxCPUPeriod        = "io.kubernetes.cri.sandbox-cpu-period"
	SandboxCPUQuota         = "io.kubernetes.cri.sandbox-cpu-quota"
	SandboxCPUShares        = "io.kubernetes.cri.sandbox-cpu-shares"
	SandboxMemory           = "io.kubernetes.cri.sandbox-memory"
)

// ContainerType is the role of a container in its VM.
type ContainerType int

const (
	// Single is a standalone container (ctr, nerdctl): it gets its own VM.
	Single ContainerType = iota
	// PodSandbox is a CRI pause container: it creates the pod's VM.
	PodSandbox
	// PodContainer is a CRI app container in an existing pod VM.
	PodContainer
)

func (t ContainerType) String() string {
	switch t {
	case PodSandbox:
		return "sandbox"
	case PodContainer:
		return "container"
	}
	return "single"
}

// Load reads <bundle>/config.json.
func Load(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("bundle spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("bundle spec %q: %w", p, err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("bundle spec %q: %w", p, err)
	}
	return s, nil
}

// Parse decodes and validates a spec.
func Parse(data []byte) (*specs.Spec, error) {
	if len(data) > MaxSpecSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxSpecSize)
	}
	var s specs.Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := Validate(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks what the shim relies on: a Linux process with
// arguments, a root, and a well-formed CRI container type.
func Validate(s *specs.Spec) error {
	var errs []error
	if s.Process == nil {
		errs = append(errs, errors.New("process: missing"))
	} else {
		if len(s.Process.Args) == 0 && s.Process.CommandLine == "" {
			errs = append(errs, errors.New("process.args: empty"))
		}
		if s.Process.Cwd != "" && !filepath.IsAbs(s.Process.Cwd) {
			errs = append(errs, fmt.Errorf("process.cwd: %q is not absolute", s.Process.Cwd))
		}
	}
	if s.Root == nil || s.Root.Path == "" {
		errs = append(errs, errors.New("root.path: missing"))
	}
	if s.Linux == nil {
		errs = append(errs, errors.New("linux: missing (only Linux containers run in the microVM)"))
	}
	if _, err := TypeOf(s); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TypeOf reads the CRI container type; no annotation is a standalone
// container.
func TypeOf(s *specs.Spec) (ContainerType, error) {
	v, ok := s.Annotations[ContainerTypeAnnotation]
	if !ok {
		return Single, nil
	}
	switch v {
	case "sandbox":
		return PodSandbox, nil
	case "container":
		if s.Annotations[SandboxIDAnnotation] == "" {
			return 0, fmt.Errorf("annotation %s: a pod container without %s", ContainerTypeAnnotation, SandboxIDAnnotation)
		}
		return PodContainer, nil
	}
	return 0, fmt.Errorf("annotation %s: unknown type %q", ContainerTypeAnnotation, v)
}

// GroupID is the key that selects a shim (and VM): the CRI sandbox id,
// else the container's own id.
func GroupID(annotations map[string]string, id string) string {
	if g := annotations[SandboxIDAnnotation]; g != "" {
		return g
	}
	return id
}

package shim

import (
	"fmt"
	"io"
	"os"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
)

// maxGuestFile bounds a host file copied into the guest (the agent's
// limit too).
const maxGuestFile = 64 << 10

// guestFiles reads the host files a CRI container binds over /etc/hosts
// and /etc/hostname, for the agent to write in the guest ("file:<name>"
// mounts). A missing or oversized file fails the create, as the bind
// would have on the host.
func guestFiles(f translate.CRIFiles) ([]*agentv1.File, error) {
	var out []*agentv1.File
	for _, x := range []struct{ name, path string }{{translate.HostsFile, f.Hosts}, {translate.HostnameFile, f.Hostname}} {
		if x.path == "" {
			continue
		}
		b, mode, err := readSmall(x.path, maxGuestFile)
		if err != nil {
			return nil, fmt.Errorf("copy %s into the guest: %w", x.path, err)
		}
		out = append(out, &agentv1.File{Name: x.name, Content: b, Mode: uint32(mode.Perm())})
	}
	return out, nil
}

// readSmall reads a regular file of at most limit bytes.
func readSmall(path string, limit int64) ([]byte, os.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(b)) > limit {
		return nil, 0, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, st.Mode(), nil
}

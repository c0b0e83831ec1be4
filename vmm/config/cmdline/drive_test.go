package cmdline

import (
	"reflect"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestParseDrives(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		drives  []config.Drive
		threads []config.IOThread
		wantErr string
	}{
		{"seed minimal", []string{"-drive", "id=rootfs,file=/path/to/rootfs"},
			[]config.Drive{{ID: "rootfs", File: "/path/to/rootfs", Direct: true}}, nil, ""},
		{"seed full", []string{"-drive", "id=rootfs,file=/path/to/rootfs,readonly=off,direct=off,serial=serial_num,iothread=iothread1,iops=200",
			"-iothread", "id=iothread1"},
			[]config.Drive{{ID: "rootfs", File: "/path/to/rootfs", Serial: "serial_num", IOThread: "iothread1", IOPS: 200}},
			[]config.IOThread{{ID: "iothread1"}}, ""},
		{"seed example order and false", []string{"-drive", "file=/home/rootfs.ext4,id=rootfs,readonly=false"},
			[]config.Drive{{ID: "rootfs", File: "/home/rootfs.ext4", Direct: true}}, nil, ""},
		{"readonly on direct true", []string{"-drive", "id=a,file=/a,readonly=on,direct=true"},
			[]config.Drive{{ID: "a", File: "/a", ReadOnly: true, Direct: true}}, nil, ""},
		{"two drives in order", []string{"-drive", "id=a,file=/a", "-drive", "id=b,file=/b,iops=0"},
			[]config.Drive{{ID: "a", File: "/a", Direct: true}, {ID: "b", File: "/b", Direct: true}}, nil, ""},
		{"iothreads seed", []string{"-iothread", "id=iothread1", "-iothread", "id=iothread2"},
			nil, []config.IOThread{{ID: "iothread1"}, {ID: "iothread2"}}, ""},
		{"iops huge kept for Validate", []string{"-drive", "id=a,file=/a,iops=1000001"},
			[]config.Drive{{ID: "a", File: "/a", Direct: true, IOPS: 1000001}}, nil, ""},
		{"missing file", []string{"-drive", "id=a"}, nil, nil, "-drive: 'file' is missing for 'drive' device"},
		{"missing id", []string{"-drive", "file=/a"}, nil, nil, "-drive: 'id' is missing for 'drive' device"},
		{"bad bool", []string{"-drive", "id=a,file=/a,readonly=maybe"}, nil, nil, "-drive: unable to parse 'maybe' for 'readonly' (on|off)"},
		{"bad iops", []string{"-drive", "id=a,file=/a,iops=-1"}, nil, nil, "-drive: unable to parse '-1' for 'iops'"},
		{"unknown key", []string{"-drive", "id=a,file=/a,cache=none"}, nil, nil, "-drive: invalid parameter 'cache'"},
		{"backing is Go API only", []string{"-drive", "id=a,file=/a,backing=/b"}, nil, nil, "-drive: invalid parameter 'backing'"},
		{"positional", []string{"-drive", "/a"}, nil, nil, "-drive: invalid parameter '/a'"},
		{"dup key", []string{"-drive", "id=a,file=/a,id=b"}, nil, nil, "-drive: parameter 'id' is given more than once"},
		{"two values", []string{"-drive", "id=a,file=/a", "id=b,file=/b"}, nil, nil, `-drive: only one value expected, got 2: ["id=a,file=/a" "id=b,file=/b"]`},
		{"no value", []string{"-drive"}, nil, nil, "-drive: requires a value, but none was supplied"},
		{"iothread no id", []string{"-iothread", "name=x"}, nil, nil, "-iothread: invalid parameter 'name'"},
		{"iothread bare", []string{"-iothread", "x"}, nil, nil, "-iothread: invalid parameter 'x'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Parse(%q) error = %v, want %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(c.Drives, tc.drives) {
				t.Errorf("drives = %+v, want %+v", c.Drives, tc.drives)
			}
			if !reflect.DeepEqual(c.IOThreads, tc.threads) {
				t.Errorf("iothreads = %+v, want %+v", c.IOThreads, tc.threads)
			}
		})
	}
}

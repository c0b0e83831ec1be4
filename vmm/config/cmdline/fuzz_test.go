package cmdline

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary argument vectors (NUL-separated) to Parse: it
// must never panic, and a successful parse must only set options given.
func FuzzParse(f *testing.F) {
	f.Add("-kernel\x00/k\x00-append\x00console=ttyS0\x00root=/dev/vda\x00-smp\x00cpus=2\x00-m\x001G")
	f.Add("-machine\x00type=microvm,dump-guest-core=off,mem-share=on\x00-serial\x00stdio")
	f.Add("-m\x00size=18446744073709551615M\x00-name\x00")
	f.Add("-smp\x00,\x00-h")
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		c, act, err := Parse(args)
		if err != nil || act != Run {
			return
		}
		if c.Boot.Kernel != "" && !strings.Contains(s, c.Boot.Kernel) {
			t.Fatalf("kernel %q not from the arguments", c.Boot.Kernel)
		}
		_ = c.Validate() // must not panic either
	})
}

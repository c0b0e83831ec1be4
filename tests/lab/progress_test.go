package lab

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestTestProgress(t *testing.T) {
	var out bytes.Buffer
	p := &testProgress{w: &out}
	stream := testMarker + "=== RUN   TestA\n" +
		"    a_test.go:1: log line --- PASS: TestNot\n" +
		testMarker + "=== RUN   TestA/sub\n" +
		testMarker + "    --- PASS: TestA/sub (0.10s)\n" +
		testMarker + "--- PASS: TestA (0.20s)\n" +
		"=== RUN   TestB\n--- SKIP: TestB (0.00s)\n" +
		"=== RUN   TestC\n--- FAIL: TestC (1.00s)\n" +
		testMarker + "=== RUN   TestD\n" + testMarker + "=== RUN   TestD/x\n"
	// Written in odd pieces, as a pipe delivers it.
	for i := 0; i < len(stream); i += 7 {
		if _, err := p.Write([]byte(stream[i:min(i+7, len(stream))])); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != stream {
		t.Fatal("output not passed through unchanged")
	}
	ended, running := p.state()
	if !reflect.DeepEqual(ended, []string{"TestA", "TestB", "TestC"}) || running != "TestD" {
		t.Fatalf("ended %q running %q", ended, running)
	}
	var closed bytes.Buffer
	p.closeOpen(&closed, testMarker, "SKIP", "why")
	want := testMarker + "--- SKIP: TestD/x (0.00s)\n    why\n" + testMarker + "--- SKIP: TestD (0.00s)\n    why\n"
	if closed.String() != want {
		t.Fatalf("closeOpen wrote %q, want %q", closed.String(), want)
	}
	if _, running := p.state(); running != "" {
		t.Fatalf("running %q after closeOpen", running)
	}

	// Outside test2json, subtest result lines are indented.
	out.Reset()
	closed.Reset()
	p = &testProgress{w: &out}
	fmt.Fprint(p, "=== RUN   TestE\n=== RUN   TestE/a\n    --- PASS: TestE/a (0.01s)\n=== RUN   TestE/b\n=== RUN   TestE/b/c\n")
	p.closeOpen(&closed, "", "FAIL", "gone")
	want = "        --- FAIL: TestE/b/c (0.00s)\n            gone\n    --- FAIL: TestE/b (0.00s)\n        gone\n--- FAIL: TestE (0.00s)\n    gone\n"
	if closed.String() != want {
		t.Fatalf("closeOpen wrote %q, want %q", closed.String(), want)
	}
}

func TestSkipArgs(t *testing.T) {
	args := []string{"-test.v=test2json", "-test.run=^TestX$"}
	if got := skipArgs(args, nil); !reflect.DeepEqual(got, args) {
		t.Fatalf("no names: %q", got)
	}
	got := skipArgs(args, []string{"TestA", "TestB.x"})
	want := []string{"-test.v=test2json", "-test.run=^TestX$", `-test.skip=^(TestA|TestB\.x)$`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
	got = skipArgs([]string{"-test.skip=Slow", "-test.v"}, []string{"TestA"})
	want = []string{"-test.v", "-test.skip=Slow|^(TestA)$"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

// A lab that wedges in the middle of a package fails the test it was in
// and runs the ones after it in a fresh lab.
func TestRunTestBinaryGoesOnAfterWedge(t *testing.T) {
	var cmds []string
	run := func(_ context.Context, o Options) (*Result, error) {
		cmds = append(cmds, o.Cmd)
		switch len(cmds) {
		case 1:
			fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestA\n"+testMarker+"--- PASS: TestA (1.00s)\n"+testMarker+"=== RUN   TestB\n")
			return nil, fmt.Errorf("%w for 5m0s", ErrIdle)
		default:
			fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestC\n"+testMarker+"--- PASS: TestC (1.00s)\n"+"PASS\n")
			return &Result{}, nil
		}
	}
	var out bytes.Buffer
	code := runTestBinary("/t/x.test", []string{"-test.v=test2json", "-test.timeout=10m"}, &out, run)
	if code != 1 {
		t.Errorf("exit %d, want 1: the wedged test failed", code)
	}
	if len(cmds) != 2 || strings.Contains(cmds[0], "-test.skip") || !strings.Contains(cmds[1], `'-test.skip=^(TestA|TestB)$'`) {
		t.Fatalf("lab commands %q", cmds)
	}
	if !strings.Contains(out.String(), testMarker+"--- FAIL: TestB (0.00s)\n") || !strings.Contains(out.String(), "--- PASS: TestC") {
		t.Fatalf("output:\n%s", out.String())
	}

	// Wedging again and again ends after maxLabs labs.
	cmds = nil
	always := func(_ context.Context, o Options) (*Result, error) {
		cmds = append(cmds, o.Cmd)
		fmt.Fprintf(o.Stdout, "=== RUN   T%d\n", len(cmds))
		return nil, fmt.Errorf("%w for 5m0s", ErrIdle)
	}
	if code := runTestBinary("/t/x.test", []string{"-test.v=true"}, &out, always); code != 1 || len(cmds) != maxLabs {
		t.Fatalf("exit %d after %d labs", code, len(cmds))
	}
	// Without -test.v there is no progress to go on from.
	cmds = nil
	if code := runTestBinary("/t/x.test", nil, &out, always); code != 1 || len(cmds) != 1 {
		t.Fatalf("quiet binary: exit %d after %d labs", code, len(cmds))
	}
}

// A lab that freezes under a test runs that test again, whole, in a fresh
// lab; its unfinished subtests are closed as skipped, so that no test is
// left without an end. A test whose lab freezes more than maxFreezes
// times fails.
func TestRunTestBinaryRerunsFrozenTest(t *testing.T) {
	var cmds []string
	run := func(_ context.Context, o Options) (*Result, error) {
		cmds = append(cmds, o.Cmd)
		switch len(cmds) {
		case 1:
			fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestA\n"+testMarker+"--- PASS: TestA (1.00s)\n"+
				testMarker+"=== RUN   TestB\n"+testMarker+"=== RUN   TestB/one\n"+testMarker+"--- PASS: TestB/one (1.00s)\n"+
				testMarker+"=== RUN   TestB/two\n")
			return nil, fmt.Errorf("%w: no heartbeat", ErrFrozen)
		default:
			fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestB\n"+testMarker+"--- PASS: TestB (1.00s)\n"+"PASS\n")
			return &Result{}, nil
		}
	}
	var out bytes.Buffer
	if code := runTestBinary("/t/x.test", []string{"-test.v=test2json"}, &out, run); code != 0 {
		t.Errorf("exit %d, want 0: the frozen test passed in its fresh lab", code)
	}
	if len(cmds) != 2 || !strings.Contains(cmds[1], `'-test.skip=^(TestA)$'`) {
		t.Fatalf("lab commands %q", cmds)
	}
	for _, want := range []string{
		testMarker + "--- SKIP: TestB/two (0.00s)\n    the lab froze (1 of 2 allowed); TestB runs again in a fresh lab\n" +
			testMarker + "--- SKIP: TestB (0.00s)\n",
		testMarker + "--- PASS: TestB (1.00s)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}

	// Freezing under the same test again and again fails it, and the
	// tests after it still run.
	cmds = nil
	out.Reset()
	freezing := func(_ context.Context, o Options) (*Result, error) {
		cmds = append(cmds, o.Cmd)
		if strings.Contains(o.Cmd, "TestB") {
			fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestC\n"+testMarker+"--- PASS: TestC (1.00s)\n"+"PASS\n")
			return &Result{}, nil
		}
		fmt.Fprint(o.Stdout, testMarker+"=== RUN   TestB\n")
		return nil, fmt.Errorf("%w: no heartbeat", ErrFrozen)
	}
	if code := runTestBinary("/t/x.test", []string{"-test.v=test2json"}, &out, freezing); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if len(cmds) != maxFreezes+2 || !strings.Contains(out.String(), testMarker+"--- FAIL: TestB (0.00s)\n    the lab froze too often during TestB") ||
		!strings.Contains(out.String(), "--- PASS: TestC") {
		t.Fatalf("%d labs, output:\n%s", len(cmds), out.String())
	}
}

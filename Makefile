# Build, test and lab entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(CURDIR)/.cache/bin:$(PATH)
GO ?= go
BIN := $(CURDIR)/bin
LAB := $(BIN)/lab
MEM ?= 4096
CPUS ?= 2

.PHONY: all build deps test critest load lint lab lab-run bench clean demo fuzz proto proto-check guest

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/stratovirt ./tests/lab/cmd/lab ./cmd/containerd-shim-stratovirt-v2
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ ./cmd/stratovirt-agent

# Idempotent install of every prerequisite (apt packages, pinned Go tools,
# Debian kernels); seconds when everything is present.
deps:
	@./tests/deps.sh

# Unit tests and host-KVM payload tests, then the tests that boot Linux
# (on the host's KVM where it can, else each test binary inside one lab run).
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e /tests/ -e /agent/e2e)
	@# The race runtime makes syscalls the seccomp tests' allow-lists forbid.
	$(GO) test -count=1 -race -timeout 10m $$($(GO) list ./vmm/... | grep -v /vmm/seccomp)
	@# Tests that boot Linux (in the lab where needed), one package at a
	@# time so that each lab VM has the whole machine. The nested lab (QEMU
	@# TCG emulating SVM) now and then loses a guest; a failed test is run
	@# once more in a fresh lab and every rerun is listed at the end.
	@rm -f $(BIN)/lab-reruns.txt; mkdir -p $(BIN)
	gotestsum --format testname --rerun-fails=1 --rerun-fails-run-root-test \
		--rerun-fails-report=$(BIN)/lab-reruns.txt --packages='./tests/... ./agent/e2e' \
		-- -count=1 -p 1 -timeout 15m
	@if [ -s $(BIN)/lab-reruns.txt ]; then echo "lab tests that failed once and passed on a rerun:"; cat $(BIN)/lab-reruns.txt; fi

# Load test through containerd: 100 sequential + 10x3 concurrent ctr
# lifecycles with leak and per-iteration time checks (30-60 min in the lab;
# make test runs a small version). FAULT_FULL=1 adds the shim-kill fault.
load: deps
	LOAD=1 $(GO) test -count=1 -timeout 90m -v -run TestLoad ./tests/fault

# The focused critest run (docs/critest.md): about 7 minutes in the lab, so
# it is its own target rather than part of `make test`.
critest: deps
	@# critest prints a dot per spec; one spec may wait minutes for a pod.
	CRITEST=1 LAB_IDLE_TIMEOUT=15m $(GO) test -count=1 -v -timeout 30m -run '^TestCritest$$' ./tests/cri

$(LAB): FORCE
	@mkdir -p $(BIN)
	@$(GO) build -o $(LAB) ./tests/lab/cmd/lab

FORCE:

# make lab CMD='...' runs a shell command in the nested-KVM lab VM and
# exits with its status (through the makeexit plugin: plain make would
# report 2 for any failure). OUT=dir shares a writable host directory.
-load $(BIN)/makeexit.so
$(BIN)/makeexit.so: tests/lab/makeexit/makeexit.c
	@mkdir -p $(BIN)
	@gcc -shared -fPIC -O2 -o $@ $<

lab: lab-run
	@$(lab-exit $(file <$(BIN)/lab.status))exit $$(cat $(BIN)/lab.status)

lab-run: $(LAB)
	@test -n "$(CMD)" || { echo "usage: make lab CMD='command'" >&2; exit 2; }
	@rc=0; $(LAB) -mem $(MEM) -cpus $(CPUS) -v $(if $(OUT),-out $(OUT)) '$(subst ','\'',$(CMD))' || rc=$$?; echo $$rc >$(BIN)/lab.status

# Every fuzz target for FUZZTIME each (crashers land in testdata/fuzz).
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) ./tests/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>&1); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v staticcheck >/dev/null || ./tests/deps.sh
	staticcheck ./...
	@$(MAKE) --no-print-directory proto-check

# Agent API: regenerate the Go code from agent-proto/*.proto (protoc from
# Debian, protoc-gen-go and protoc-gen-go-ttrpc from `make deps`).
PROTOS := $(shell cd agent-proto 2>/dev/null && ls */*.proto)
PROTOC = (cd $(1) && protoc -I $(CURDIR)/agent-proto --go_out=. --go_opt=paths=source_relative \
	--go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative $(PROTOS))
proto:
	$(call PROTOC,agent-proto)

# Fails when the committed generated code is not what `make proto` makes.
proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	for p in $(PROTOS); do mkdir -p $$tmp/$$(dirname $$p); done && \
	$(call PROTOC,$$tmp) && \
	for f in $$(cd $$tmp && find . -name '*.pb.go'); do \
		diff -u agent-proto/$$f $$tmp/$$f >/dev/null || { echo "stale generated code: agent-proto/$$f (run make proto)"; exit 1; }; \
	done && for f in $$(cd agent-proto && find . -name '*.pb.go'); do \
		test -e $$tmp/$$f || { echo "generated file without a .proto: agent-proto/$$f"; exit 1; }; done

# Guest image: the microVM kernel (agent/kernel, built by make deps) and an
# initramfs with the agent as /init and runc, under $(GUEST_DIR) (see
# docs/guest.md). GUEST_KERNEL_DIR=$(CURDIR)/.cache/kernel/cloud-amd64
# builds it with Debian's cloud kernel and its modules instead.
GUEST_DIR ?= $(CURDIR)/build/guest
GUEST_KERNEL_DIR ?= $(CURDIR)/.cache/kernel/microvm
guest:
	@mkdir -p $(GUEST_DIR)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(GUEST_DIR)/stratovirt-agent ./cmd/stratovirt-agent
	$(GO) run ./agent/guestimage -agent $(GUEST_DIR)/stratovirt-agent -out $(GUEST_DIR) -kernel-dir $(GUEST_KERNEL_DIR)

clean:
	rm -rf $(BIN)

# The main job: boot a microVM with cmd/stratovirt and show its console,
# then run a container in a microVM through containerd 2.4.2 and the shim
# (both inside the lab where the host's KVM cannot boot Linux).
# DEMO_FLAGS=-debug prints containerd's and the shim's debug log (phase timings).
demo: deps
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/stratovirt ./tests/demo
	$(BIN)/demo -vmm $(BIN)/stratovirt $(DEMO_FLAGS)

# Benchmarks against their peers in one run (in the lab where the host's
# KVM cannot boot Linux): results.{md,json,svg} under BENCH_OUT. Every row
# group runs unless BENCH_ROWS picks some (e.g. BENCH_ROWS=agent,container;
# groups: boot,mem,agent,container,shimmem,freemem,density,pod,blk,net,vsock).
# BENCH_BREAKDOWN=1 adds verbose-console boots to the agent group.
# BENCH_CTRD_LOG=1 keeps the container, shimmem, freemem, density and pod groups'
# containerd logs (with the shims') in BENCH_OUT. BENCH_AB=SECTION.KEY=VALUE
# (e.g. hypervisor.kernel=/tmp/k/vmlinux) adds ours with that shim setting
# to every round of the container group: an A/B in one lab.
BENCH_OUT ?= bench/results
BENCH_RUNS ?= 10
BENCH_ROWS ?= all
bench: deps
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/stratovirt ./tests/bench/cmd/bench
	$(BIN)/bench -runs $(BENCH_RUNS) -rows $(BENCH_ROWS) -out $(BENCH_OUT) -vmm $(BIN)/stratovirt

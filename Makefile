# mailroom — outbound mail for Kubernetes.
#
# make test        everything CI runs: generated files up to date, vet,
#                  unit tests, envtest suites against a real kube-apiserver,
#                  the relay's tests against real SMTP peers, and the e2e.
# make bench       throughput benchmarks against Postfix on this machine.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.6.16
CONTROLLER_TOOLS_VERSION ?= v0.23.0

BIN := $(CURDIR)/bin
K8S_ASSETS := $(BIN)/k8s/$(K8S_VERSION)
CONTROLLER_GEN := $(BIN)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen
HELM_VERSION ?= v3.22.0
HELM := $(BIN)/helm/$(HELM_VERSION)/helm
PROMTOOL := $(BIN)/promtool/v0.316.0/promtool
IMG ?= localhost/mailroom:dev

# envtest (controller-runtime) finds kube-apiserver and etcd here.
export KUBEBUILDER_ASSETS := $(K8S_ASSETS)

.PHONY: all
all: build

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from kubebuilder markers.
	$(CONTROLLER_GEN) rbac:roleName=mailroom-manager crd paths="./api/...;./internal/controller/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	cp config/crd/bases/*.yaml charts/mailroom/crds/
	cp config/rbac/role.yaml charts/mailroom/files/role.yaml
	hack/gen-monitoring.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet:
	go vet ./...

.PHONY: check-generated
check-generated: manifests generate docs ## Fail when generated files differ from what is committed.
	@if [ -n "$$(git status --porcelain -- api config charts/mailroom/crds charts/mailroom/files docs/api.md)" ]; then \
		echo "generated files are stale; run 'make manifests generate docs' and commit:"; \
		git status --porcelain -- api config charts/mailroom/crds charts/mailroom/files docs/api.md; git --no-pager diff --stat -- api config charts docs/api.md; exit 1; fi

.PHONY: docs
docs: ## Generate docs/api.md, the reference of every CRD field, from the types in api/.
	go run ./hack/apidocs -out docs/api.md

.PHONY: check-fmt
check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: docker-build
docker-build: ## Build the image (both binaries) with a container engine: docker build -t $(IMG) .
	docker build -t $(IMG) .

.PHONY: build
build: ## Build the manager and relay binaries into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/relay ./cmd/relay

##@ Test

.PHONY: test
test: check-fmt check-generated vet test-deps envtest-assets test-chart test-alerts unit test-scale fuzz demo-once e2e ## Everything CI runs.

# Packages with concurrent hot paths run under the race detector.
RACE_PKGS := ./internal/relay/... ./internal/queue/... ./cmd/relay/... ./internal/delivery/... \
	./internal/dsn/... ./internal/mtasts/... ./internal/scheduler/... ./internal/admin/... \
	./internal/testutil/smtpsink/... ./internal/testutil/dnstest/... ./internal/peer/... \
	./internal/events/... ./internal/httpapi/...

.PHONY: unit
unit: ## Go tests (unit, envtest, relay against real peers); race detector on relay, queue and delivery.
	@echo "envtest suites run against $$($(K8S_ASSETS)/kube-apiserver --version) and $$($(K8S_ASSETS)/etcd --version | head -1) (the suites fail on any other version)"
	race=$$(for p in $(RACE_PKGS); do if [ -d "$${p%/...}" ]; then go list "$$p"; fi; done); \
	rest=$$(go list ./... | grep -v -x -F -e "$$(printf '%s\n' $$race)" | grep -v /test/e2e/cluster); \
	go test -count=1 -timeout 20m $$rest; \
	go test -count=1 -race -timeout 20m $$race

.PHONY: test-chart
test-chart: helm ## helm lint and helm template of charts/mailroom (test/manifests dry-runs what it renders).
	$(HELM) lint --strict charts/mailroom
	$(HELM) lint --strict charts/mailroom --set metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true,defaultPool.create=true
	$(HELM) template mailroom charts/mailroom --namespace mailroom-system >/dev/null

.PHONY: test-alerts
test-alerts: promtool ## promtool check rules and the alert rules' unit tests (test/alerts).
	$(PROMTOOL) check rules charts/mailroom/files/alerts.yaml
	$(PROMTOOL) test rules test/alerts/alerts_test.yaml

.PHONY: helm
helm: ## Build helm $(HELM_VERSION) from the Go module proxy into bin/helm/.
	HELM_VERSION=$(HELM_VERSION) hack/build-helm.sh

.PHONY: promtool
promtool: ## Build promtool from the Go module proxy into bin/promtool/.
	hack/build-promtool.sh

# Fuzz tests, each for a bounded time (the committed corpora under
# testdata/fuzz run as regression tests in unit too).
FUZZTIME ?= 20s
FUZZ_TARGETS := FuzzCorruptSpool:./internal/queue FuzzDataReader:./internal/relay FuzzDataGuardBlocks:./internal/relay FuzzDataContent:./internal/relay \
	FuzzParse:./internal/relay/config FuzzParse:./internal/dsn

.PHONY: test-scale
test-scale: ## One RelayPool with 1,000 domains (RSA-2048) and 5,000 credentials settles, renders deterministically, and resyncs write nothing.
	MAILROOM_SCALE=full go test -count=1 -timeout 25m -v -run '^TestThousandDomainsFiveThousandCredentialsSettle$$' ./internal/controller/relaypool/ | grep -E '^(---|=== RUN|ok|FAIL|PASS)|scale_test'

.PHONY: fuzz
fuzz: ## Fuzz the spool's corruption handling, the DATA reader, the config loader and the DSN parser (FUZZTIME each, default 20s).
	for t in $(FUZZ_TARGETS); do \
		go test -count=1 -run '^$$' -fuzz "^$${t%%:*}\$$" -fuzztime $(FUZZTIME) "$${t#*:}" || exit 1; \
	done

.PHONY: test-deps
test-deps: ## Install the Debian packages tests use as real peers (BIND, swaks, dkimpy, Postfix).
	hack/install-test-deps.sh

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver and etcd from the Go module proxy into bin/k8s/.
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) hack/build-k8s.sh kube-apiserver etcd

##@ End-to-end on a real node

.PHONY: cluster-assets
cluster-assets: ## Node binaries (Kubernetes v1.37.2, etcd, CoreDNS) into bin/, once per version.
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) hack/build-k8s.sh all
	hack/cluster/build-coredns.sh

.PHONY: images
images: cluster-assets ## Image tarballs (mailroom, pause, e2e helper, CoreDNS) into bin/images, no engine or registry.
	go run ./hack/images -out $(BIN)/images -coredns $(BIN)/coredns/v1.15.0/coredns

.PHONY: e2e
e2e: ## A real single-node Kubernetes: up, the test/e2e/cluster suites, always down and a leftovers check.
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) hack/cluster/e2e.sh

.PHONY: cluster-up
cluster-up: images ## Start the node by hand (KUBECONFIG=tmp/e2e-cluster/admin.kubeconfig).
	hack/cluster/up

.PHONY: cluster-down
cluster-down: ## Tear the node down and check nothing remains.
	hack/cluster/down && hack/cluster/check-clean

##@ Benchmarks

.PHONY: bench
bench: bench-intake bench-delivery bench-queue ## All benchmarks; each compares against Postfix in the same run.

.PHONY: bench-intake
bench-intake: ## Relay intake (fsync on, 5 KB, 20 sessions) vs Postfix, both fed by smtp-source.
	hack/bench-intake.sh $(BENCH_ARGS)

.PHONY: bench-delivery
bench-delivery: ## End to end: smtp-source → relay → MX via loopback DNS → smtp-sink, vs Postfix with the same DNS and sink.
	hack/bench-delivery.sh $(BENCH_ARGS)

.PHONY: bench-queue
bench-queue: ## The spool at 10k, 100k and 1M queued (delivery paused) vs empty: intake, scheduling cost, RSS, restart, disk.
	hack/bench-queue.sh $(BENCH_ARGS)

$(CONTROLLER_GEN):
	GOBIN=$(dir $(CONTROLLER_GEN)) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Demo

.PHONY: demo-once
demo-once: ## The loopback demo once, as CI runs it (make e2e covers the node): fails unless dkimpy verifies the delivered message.
	go build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo -local -once

.PHONY: demo
demo: ## As users run it, on a real node (root): BIND, sink MX, external-dns pod, mailroom by Helm, config/samples, a pod sends. DEMO_ARGS=-once to stop after.
	go build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo $(DEMO_ARGS)

.PHONY: demo-local
demo-local: ## The loopback demo (no root): control plane, BIND, external-dns, manager, a relay fed the operator-rendered config.
	go build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo -local $(DEMO_ARGS)

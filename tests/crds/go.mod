// Pins the upstream modules whose CRDs the test harness installs. No Go code lives here: the
// harness asks `go mod download -json <module>` for each module's directory in the module cache,
// so the versions below (checked against go.sum) are the single source of truth.
module inventory-bridge.io/tests/crds

go 1.26.6

require (
	github.com/projectsveltos/libsveltos v1.14.0
	open-cluster-management.io/api v1.3.0
	open-cluster-management.io/managed-serviceaccount v0.10.0
	sigs.k8s.io/cluster-api v1.14.2
	sigs.k8s.io/cluster-inventory-api v0.1.3
)

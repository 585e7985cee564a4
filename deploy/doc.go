// Package deploy holds no code: its tests check the deployment files beside
// it (Prometheus rules, the Grafana dashboard, Kubernetes manifests) against
// a real worker's /metrics.
package deploy

// Package deploy holds usher's deployment files: the container image
// (Dockerfile), a compose file with two usher replicas and Redis, and
// Kubernetes manifests. It contains no code; its test parses every file so
// that they cannot rot silently when the configuration changes.
package deploy

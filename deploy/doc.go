// Package deploy holds what runs the broker outside this repository: the
// container image (Dockerfile, built from the repository root) and the
// Kubernetes manifests (kubernetes/, applied with kustomize). It has no
// code; its test checks that the manifests parse and agree with the
// broker's and the client's flags, and the image with the Makefile's
// driver version.
package deploy

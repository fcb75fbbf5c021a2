// Package deploy holds no code: it is where the tests of keel's deployment
// files live. The files themselves are docker-compose.yml at the repository
// root, scripts/build-images.sh, and the Kubernetes manifests in
// deploy/kubernetes.
//
// The tests check that those files agree with each other and with the
// configuration internal/stack reads (images, ports, probes, dial targets,
// environment variables), and, when KEEL_DOCKER_TEST=1, run the compose
// stack under the Docker engine and push and pull real images through it.
package deploy

// Command pause is the pod sandbox process of the local e2e node (what
// containerd's sandbox_image runs): it holds the pod's namespaces open by
// sleeping, reaps children re-parented to it (it is PID 1 of the pod when
// the pod shares its process namespace), and exits cleanly on SIGTERM or
// SIGINT so a pod stops without waiting for SIGKILL.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// One SIGCHLD may stand for several exited children.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a started component. The start time (field 22 of
// /proc/<pid>/stat, in clock ticks since boot) tells our process apart from
// an unrelated one that reused its PID after a reboot or a long pause, so
// down never signals a stranger.
type proc struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

// procStat returns a process's start time and state letter.
func procStat(pid int) (uint64, byte, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are fixed.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("pid %d: short stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, f[0][0], err
}

// alive: the same process still exists and has not exited (a zombie has).
func (p proc) alive() bool {
	start, st, err := procStat(p.PID)
	return err == nil && start == p.StartTime && st != 'Z' && st != 'X'
}

// running is a component started by this up: it can tell when it exits.
type running struct {
	proc
	exited  chan struct{}
	waitErr error
}

func (r *running) exitedErr() error {
	select {
	case <-r.exited:
		return fmt.Errorf("%s (pid %d) exited: %v", r.Name, r.PID, r.waitErr)
	default:
		return nil
	}
}

// start runs a component detached (its own session, so the terminal's
// Ctrl-C reaches up, which tears down in order, rather than every
// component at once) with stdout and stderr in its log.
func start(name, bin string, args []string, logPath string, env []string) (*running, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	startTime, _, err := procStat(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r := &running{proc: proc{Name: name, PID: cmd.Process.Pid, StartTime: startTime, Log: logPath}, exited: make(chan struct{})}
	// Reap it while up runs, so an early exit is noticed (and is not a
	// zombie); after up exits, init inherits and reaps it.
	go func() {
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()
	return r, nil
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It only ever
// signals the process recorded in p.
func stop(p proc, grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
		return err
	}
	if waitGone(p, grace) {
		return nil
	}
	fmt.Printf("cluster: %s (pid %d) ignored SIGTERM for %s; SIGKILL\n", p.Name, p.PID, grace)
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return err
	}
	if !waitGone(p, 10*time.Second) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
	return nil
}

func waitGone(p proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// peakRSS is the process's high-water resident memory (VmHWM), in KiB.
func peakRSS(pid int) int64 {
	return statusField(pid, "VmHWM:")
}

func rss(pid int) int64 {
	return statusField(pid, "VmRSS:")
}

func statusField(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// tail returns the last n lines of a log, for failure messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		f.Seek(st.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pidsWhere lists running processes whose command line satisfies match
// (e.g. containerd shims started with our socket address).
func pidsWhere(match func(exe string, args []string) bool) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if !match(exe, args) {
			continue
		}
		start, st, err := procStat(pid)
		if err != nil || st == 'Z' {
			continue
		}
		out = append(out, proc{Name: filepath.Base(args[0]), PID: pid, StartTime: start})
	}
	return out
}

// Package dkimpy verifies DKIM signatures with dkimpy (Debian's
// python3-dkim), an implementation independent of mailroom's, fetching the
// keys from a given DNS server (BIND on loopback in tests and the demo)
// instead of the system resolver.
package dkimpy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// script verifies every DKIM-Signature of a message. It prints one line per
// signature, "<index> <pass|fail> d=<domain> s=<selector> a=<algorithm>",
// and exits 1 unless all pass.
const script = `
import sys, dkim, dns.message, dns.query, dns.rdatatype
server, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
msg = open(path, "rb").read()

def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    q = dns.message.make_query(name, dns.rdatatype.TXT)
    r = dns.query.tcp(q, server, port=port, timeout=timeout)
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return b"".join(list(rrset)[0].strings)
    return None

n = sum(1 for line in msg.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
if n == 0:
    print("no signatures")
    sys.exit(1)
ok = True
for i in range(n):
    d = dkim.DKIM(msg)
    res = d.verify(idx=i, dnsfunc=dnsfunc)
    sig = d.signature_fields
    print(i, "pass" if res else "fail", "d=" + sig[b"d"].decode(), "s=" + sig[b"s"].decode(), "a=" + sig[b"a"].decode())
    ok = ok and res
sys.exit(0 if ok else 1)
`

// Python is Debian's interpreter, which has the dkim and dns modules; a
// pyenv python3 earlier on PATH does not.
const Python = "/usr/bin/python3"

// Verify checks every signature of message, looking keys up at dnsAddr
// ("host:port", over TCP). It returns dkimpy's report, and an error unless
// every signature verified.
func Verify(dnsAddr string, message []byte) (string, error) {
	host, port, err := net.SplitHostPort(dnsAddr)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "dkimpy-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "message.eml")
	if err := os.WriteFile(path, message, 0o600); err != nil {
		return "", err
	}
	out, err := exec.Command(Python, "-c", script, host, port, path).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("dkimpy: %w", err)
	}
	return string(out), nil
}

package main

import (
	"net"
	"os/exec"
)

// dkimVerifyScript verifies a message's DKIM signatures with dkimpy (an
// implementation independent of ours), fetching keys from the demo's BIND
// rather than the system resolver.
const dkimVerifyScript = `
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

d = dkim.DKIM(msg)
ok = d.verify(dnsfunc=dnsfunc)
sig = d.signature_fields
print("dkimpy:", "pass" if ok else "FAIL", "d=" + sig[b"d"].decode(), "s=" + sig[b"s"].decode(), "a=" + sig[b"a"].decode())
sys.exit(0 if ok else 1)
`

func dkimVerify(dnsAddr, path string) (string, error) {
	host, port, _ := net.SplitHostPort(dnsAddr)
	// Debian's interpreter: the dkim and dns modules are its packages.
	out, err := exec.Command("/usr/bin/python3", "-c", dkimVerifyScript, host, port, path).CombinedOutput()
	return string(out), err
}

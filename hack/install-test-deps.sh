#!/usr/bin/env bash
# Installs the Debian packages mailroom's tests and benchmarks use as real
# peers: BIND (named) for DNS, swaks and Python's dkimpy as independent SMTP
# and DKIM implementations, Postfix for smtp-source/smtp-sink and the
# baseline in benchmarks. Only what is missing is installed; Postfix's own
# service is never left running.
set -euo pipefail

need=()
command -v named >/dev/null || need+=(bind9)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v swaks >/dev/null || need+=(swaks)
# swaks speaks TLS (STARTTLS, port 465) only with these Perl modules.
perl -MNet::SSLeay -MIO::Socket::SSL -e1 2>/dev/null || need+=(libnet-ssleay-perl libio-socket-ssl-perl)
# Debian's interpreter, not a pyenv one on PATH: the packages live there.
/usr/bin/python3 -c 'import dkim, dns.resolver' 2>/dev/null || need+=(python3-dkim python3-dnspython)
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/smtp-source ] || [ -x /usr/lib/postfix/sbin/smtp-source ] || need+=(postfix)

if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
	echo "install-test-deps: missing ${need[*]} and not root; install them with apt-get" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix asks debconf questions on install; answer them so it stays local.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string mailroom.test" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
# Packages start their daemons on install; tests run their own instances.
for svc in named bind9 postfix; do
	(service "$svc" stop || true) >/dev/null 2>&1
done
pkill -x named 2>/dev/null || true

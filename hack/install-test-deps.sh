#!/usr/bin/env bash
# Installs the Debian packages mailroom's tests and benchmarks use as real
# peers: BIND (named) for DNS, swaks and Python's dkimpy as independent SMTP
# and DKIM implementations, Postfix for smtp-source/smtp-sink and the
# baseline in benchmarks. Only what is missing is installed. The packages
# start their own daemons on install; those (and only those) are stopped
# again: tests run their own instances, and other processes on the machine,
# such as the BIND servers of tests running now, are left alone.
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
	echo "install-test-deps: missing ${need[*]} and not root; install them with:" >&2
	echo "  sudo apt-get install -y --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')" >&2
	exit 1
fi

# The pid file of the named that bind9's own service runs (Debian's
# default); tests point it elsewhere.
named_pidfile=${NAMED_PIDFILE:-/run/named/named.pid}
pid_in() { [ -r "$1" ] && tr -dc 0-9 <"$1" || true; }
named_before=$(pid_in "$named_pidfile")
# Services already running before the install are someone else's: keep them.
declare -A running
for svc in named bind9 postfix; do
	if service "$svc" status >/dev/null 2>&1; then running[$svc]=1; fi
done

export DEBIAN_FRONTEND=noninteractive
# Postfix asks debconf questions on install; answer them so it stays local.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string mailroom.test" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null

# Stop the daemons the install started, through their service scripts.
for svc in named bind9 postfix; do
	if [ -z "${running[$svc]:-}" ]; then
		(service "$svc" stop || true) >/dev/null 2>&1
	fi
done
# Where no init script could stop it (a container without one), stop the
# named the install started: the one in bind9's pid file that was not
# there before. By PID only, never by name.
pid=$(pid_in "$named_pidfile")
if [ -z "${running[named]:-}" ] && [ -n "$pid" ] && [ "$pid" != "$named_before" ] &&
	[ "$(ps -o comm= -p "$pid" 2>/dev/null)" = named ]; then
	kill "$pid" 2>/dev/null || true
fi

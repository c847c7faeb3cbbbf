// Package dnsrecord builds the DNS records a sending domain needs — SPF
// (RFC 7208), DMARC (RFC 7489) and the DKIM key records whose text package
// dkim makes — encodes them as external-dns DNSEndpoint targets, and checks
// with miekg/dns that resolvers serve them with the intended meaning.
//
// # TXT targets and external-dns
//
// external-dns hands DNSEndpoint targets to its provider as they are. The
// rfc2136 provider builds "<name> <ttl> TXT <target>" and parses it with
// miekg/dns, so a target must be zone-file presentation form: an unquoted
// space separates character-strings (which receivers join without a
// space) and an unquoted ";" starts a comment. The Split encoding therefore
// writes every value as quoted strings of at most 255 bytes separated by one
// space, with \" \\ and \DDD escapes — byte for byte what miekg/dns prints
// for the record it parses:
//
//	"v=DKIM1; k=rsa; p=MIIBIjANBg…(up to 255 bytes)" "…IDAQAB"
//
// Found by running external-dns v0.21.0 against BIND (test/e2e): with that
// target a 2048-bit DKIM record, SPF and DMARC are created correctly. But
// the released v0.21.0 cannot change or remove them again, whatever the
// encoding:
//
//   - Its TXT registry names the ownership record of a TXT endpoint
//     "<txt-prefix>txt-<name>" but cannot map that name back (its mapper does
//     not know the type "txt"), so the data record looks unowned and every
//     update and delete is dropped. external-dns then logs "All records are
//     already up to date" each cycle: a steady state only because it has
//     stopped managing the records (upstream issues #6180 and #6718; fixed
//     on master by PR #6435, after v0.21.0).
//   - Its rfc2136 provider reads each string of a TXT record back as a
//     separate, unquoted target. No value containing a space or ";" — every
//     SPF, DKIM and DMARC record — then equals its target, and the record
//     RemoveRecord builds from what it read is not the one in the zone. With
//     --registry=noop this shows as "Removing RR"/"Adding RR" every cycle
//     while the old value stays published beside the new one (two SPF
//     records).
//
// hack/build-external-dns.sh patched builds v0.21.0 with both fixed
// (hack/tools/external-dns/patches): the provider reads a record back as
// one target in the same presentation form, which equals the Split target,
// so updates and deletes match and further cycles change nothing. The e2e
// suites run that build with --txt-prefix=_extdns-%{record_type}. (without
// the record type in the prefix, the ownership record of an apex SPF
// record, "txt-example.com", falls outside the zone); docs/external-dns.md
// tells users what all this means for their external-dns.
//
// # Verification
//
// Verifier compares meaning, not bytes: TXT strings are joined, SPF terms
// compared as a set with addresses normalised, DKIM and DMARC tag lists
// compared tag by tag with the defaults of their RFCs. A resolver that does
// not answer is reported as unreachable, distinct from a wrong or missing
// record.
package dnsrecord

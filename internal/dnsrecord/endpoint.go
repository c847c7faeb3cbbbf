package dnsrecord

import (
	"sigs.k8s.io/external-dns/endpoint"
)

// Endpoints turns records into external-dns endpoints with ttl seconds.
// Records sharing a name become one endpoint with several targets, because
// external-dns plans per name and type: two endpoints for the same name
// would fight over one RRset. The order of records is kept, so equal input
// gives equal output and an unchanged domain never rewrites its
// DNSEndpoint.
func Endpoints(records []Record, ttl int64, enc Encoding) ([]*endpoint.Endpoint, error) {
	var out []*endpoint.Endpoint
	byName := map[string]*endpoint.Endpoint{}
	for _, r := range records {
		target, err := EncodeTXT(r.Value, enc)
		if err != nil {
			return nil, err
		}
		if ep, ok := byName[r.Name]; ok {
			ep.Targets = append(ep.Targets, target)
			continue
		}
		ep := &endpoint.Endpoint{
			DNSName:    r.Name,
			RecordType: endpoint.RecordTypeTXT,
			RecordTTL:  endpoint.TTL(ttl),
			Targets:    endpoint.Targets{target},
		}
		byName[r.Name] = ep
		out = append(out, ep)
	}
	return out, nil
}

package relay

import (
	"crypto"
	"io"
	"net/textproto"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// signedFields are the header fields covered by DKIM signatures (RFC 6376
// §5.4.1 recommendations plus list and feedback fields). Each is
// over-signed: named once more than it occurs, so a field of that name added
// in transit, or added where there was none, breaks the signature instead of
// riding along.
var signedFields = []string{
	"From", "Reply-To", "Sender", "Subject", "Date", "Message-ID", "To", "Cc",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-Disposition", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Unsubscribe-Post", "List-Post", "List-Owner",
	"List-Subscribe", "List-Archive", "Feedback-ID",
}

// headerKeys is the explicit h= list for a header section. Never nil: a nil
// list would make go-msgauth sign every field, including ones later hops
// add or rewrite.
func headerKeys(h *header, added []string) []string {
	count := map[string]int{}
	for k, v := range h.fields {
		count[k] = len(v)
	}
	for _, f := range added {
		name, _, _ := strings.Cut(f, ":")
		count[textproto.CanonicalMIMEHeaderKey(name)]++
	}
	keys := make([]string, 0, 2*len(signedFields))
	for _, name := range signedFields {
		for i := 0; i <= count[textproto.CanonicalMIMEHeaderKey(name)]; i++ {
			keys = append(keys, name)
		}
	}
	return keys
}

// signers is a set of DKIM signers fed the same message.
type signers []*dkim.Signer

func newSigners(domain string, keys []signingKey, headerKeys []string) (signers, error) {
	var ss signers
	for _, k := range keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 domain,
			Selector:               k.selector,
			Signer:                 k.signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys,
		})
		if err != nil {
			ss.abort()
			return nil, err
		}
		ss = append(ss, s)
	}
	return ss, nil
}

func (ss signers) writers() []io.Writer {
	w := make([]io.Writer, len(ss))
	for i, s := range ss {
		w[i] = s
	}
	return w
}

// finish closes every signer and returns their DKIM-Signature fields.
func (ss signers) finish() (string, error) {
	var b strings.Builder
	for _, s := range ss {
		if err := s.Close(); err != nil {
			ss.abort()
			return "", err
		}
		b.WriteString(s.Signature())
	}
	return b.String(), nil
}

func (ss signers) abort() {
	for _, s := range ss {
		_ = s.Close()
	}
}

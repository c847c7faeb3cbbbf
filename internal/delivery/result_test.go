package delivery_test

import (
	"testing"

	"mailroom.io/mailroom/internal/delivery"
)

func TestUnknownUserClass(t *testing.T) {
	for _, tc := range []struct {
		reply delivery.Reply
		want  bool
	}{
		{delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "No such user"}, true},
		{delivery.Reply{Code: 550, Enhanced: "5.1.10", Text: "Null MX"}, true},
		{delivery.Reply{Code: 553, Enhanced: "5.1.3", Text: "Bad address syntax"}, true},
		{delivery.Reply{Code: 550, Enhanced: "5.1.8", Text: "Sender domain rejected"}, false},
		{delivery.Reply{Code: 550, Enhanced: "5.7.1", Text: "Blocked by policy"}, false},
		{delivery.Reply{Code: 450, Enhanced: "4.1.1", Text: "Try again"}, false},
		{delivery.Reply{Code: 550, Text: "<bob@example.net>... User unknown"}, true},
		{delivery.Reply{Code: 550, Text: "Mailbox does not exist"}, true},
		{delivery.Reply{Code: 550, Text: "Message rejected as spam"}, false},
		{delivery.Reply{Code: 554, Text: "no such user"}, false},
	} {
		if got := delivery.IsUnknownUser(tc.reply); got != tc.want {
			t.Errorf("IsUnknownUser(%s) = %v, want %v", tc.reply, got, tc.want)
		}
	}
}

func TestReplyStringIsTheReplyAsSent(t *testing.T) {
	r := delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "The account does not exist.\nPlease check the address."}
	want := "550-5.1.1 The account does not exist.\n550 5.1.1 Please check the address."
	if got := r.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (delivery.Reply{Code: 421, Text: "busy"}).String(); got != "421 busy" {
		t.Errorf("without enhanced code: %q", got)
	}
	if got := (delivery.Reply{}).String(); got != "" {
		t.Errorf("no reply: %q", got)
	}
}

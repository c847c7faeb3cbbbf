package delivery

// DialViaResolver exposes the MTA-STS policy host dialer to the tests.
var DialViaResolver = (*Deliverer).dialViaResolver

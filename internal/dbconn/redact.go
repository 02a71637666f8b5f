package dbconn

import (
	"regexp"
	"sort"
	"strings"
	"sync"
)

var (
	secretsMu sync.RWMutex
	secrets   []string
)

// RegisterSecret adds a password that Redact must hide wherever it appears.
func RegisterSecret(s string) {
	if s == "" {
		return
	}
	secretsMu.Lock()
	defer secretsMu.Unlock()
	for _, have := range secrets {
		if have == s {
			return
		}
	}
	secrets = append(secrets, s)
	// Longest first, so that a password containing another is hidden whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
}

var (
	// The password runs to the last '@' before the path: it may hold a raw '@'.
	uriPassword = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]*):[^/\s]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
)

// Redact hides passwords in text that may reach a user, a log or a report: every
// registered secret, the password part of URIs, and password= keywords.
func Redact(s string) string {
	s = uriPassword.ReplaceAllString(s, "$1:xxxxx@")
	s = kvPassword.ReplaceAllString(s, "${1}xxxxx")
	secretsMu.RLock()
	defer secretsMu.RUnlock()
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "xxxxx")
	}
	return s
}

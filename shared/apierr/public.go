package apierr

import (
	"path"
	"regexp"
	"strings"
)

// Public returns text from the engine, a compiler or a registry client fit for a
// response body: it keeps what tells a ChallMaker what went wrong (the message, the file
// name and line) and drops what only describes the server: absolute paths become their
// last element, state and backend URLs (file://, s3://, gs://, azblob://) and the
// "created by user@host (pid N)" of a lock become placeholders. The full text stays in
// the server logs (and in bodies only with CHALLFN_DEBUG=true).
func Public(s string) string {
	s = backendURL.ReplaceAllString(s, "[state]")
	s = lockOwner.ReplaceAllString(s, "created by another engine")
	s = userAtHost.ReplaceAllString(s, "[host]")
	s = pid.ReplaceAllString(s, "")
	// The "//" of the URLs kept (a registry's) is not a path.
	s = strings.ReplaceAll(s, "://", "\x00")
	s = absPath.ReplaceAllStringFunc(s, func(m string) string {
		i := strings.IndexByte(m, '/')
		base := path.Base(strings.TrimRight(m[i:], "/"))
		if base == "/" || base == "." {
			base = "[path]"
		}
		return m[:i] + base
	})
	return strings.ReplaceAll(s, "\x00", "://")
}

var (
	backendURL = regexp.MustCompile(`\b(?i:file|s3|gs|gcs|azblob|etcd|unix)://[^\s"'<>),;:]*`)
	lockOwner  = regexp.MustCompile(`created by [^\s@]+@[^\s]+( \(pid \d+\))?`)
	userAtHost = regexp.MustCompile(`\b[a-z_][a-z0-9_-]*@[A-Za-z0-9][A-Za-z0-9.-]*\b \(pid \d+\)`)
	pid        = regexp.MustCompile(` ?\(pid \d+\)`)
	// A path starts a token (or follows a quote, bracket, '=' or ':'), and ends at a
	// character a message puts after it (":12:3", quotes, brackets, punctuation).
	absPath = regexp.MustCompile(`(^|[\s"'(\[=:])(/(?:[^/\s"'()\[\]:,;][^\s"'()\[\]:,;]*)?)`)
)

// Package bucketurl prepares the gocloud.dev blob URLs of challfn's buckets
// (the Pulumi backend, the scenario store) so that a process killed while it
// writes leaves them readable.
package bucketurl

import "net/url"

// Normalize returns raw with, for file:// buckets (fileblob), the options
// every writer of it must use, whatever else the URL says:
//
//   - no_tmp_dir: temporary files next to their target (the Pulumi DIY backend
//     sets it too), so that the rename that publishes a write never crosses
//     file systems;
//   - metadata=skip: no ".attrs" sidecar files. fileblob writes them in place,
//     not through a temporary file: a process killed while writing one leaves
//     an empty sidecar, and from then on every read of its blob, and every
//     listing (`pulumi stack ls`), fails with "EOF". challfn never reads blob
//     metadata back, nor does the Pulumi engine.
//
// Other schemes are returned as given.
func Normalize(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "file" {
		return raw, nil
	}
	q := u.Query()
	if q.Get("no_tmp_dir") == "" {
		q.Set("no_tmp_dir", "true")
	}
	q.Set("metadata", "skip")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

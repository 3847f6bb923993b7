package store

// SetPageSize lets tests force paged range reads.
func (s *Store) SetPageSize(n int64) { s.page = n }

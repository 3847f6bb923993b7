package apierr

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// validUTF8 replaces invalid UTF-8 in every string of m (fields, lists, map
// keys and values, nested messages) with U+FFFD.
func validUTF8(m protoreflect.Message) {
	fix := func(v protoreflect.Value) (protoreflect.Value, bool) {
		if s := v.String(); !utf8.ValidString(s) {
			return protoreflect.ValueOfString(strings.ToValidUTF8(s, "\uFFFD")), true
		}
		return v, false
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mp := v.Map()
			type kv struct {
				k protoreflect.MapKey
				v protoreflect.Value
			}
			var redo []kv
			mp.Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					validUTF8(val.Message())
				} else if fd.MapValue().Kind() == protoreflect.StringKind {
					if nv, ok := fix(val); ok {
						val = nv
						mp.Set(k, val)
					}
				}
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					redo = append(redo, kv{k, val}) // keys change after the range
				}
				return true
			})
			for _, e := range redo {
				mp.Clear(e.k)
				nk, _ := fix(e.k.Value())
				mp.Set(nk.MapKey(), e.v)
			}
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.MessageKind, protoreflect.GroupKind:
					validUTF8(l.Get(i).Message())
				case protoreflect.StringKind:
					if nv, ok := fix(l.Get(i)); ok {
						l.Set(i, nv)
					}
				}
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			validUTF8(v.Message())
		case fd.Kind() == protoreflect.StringKind:
			if nv, ok := fix(v); ok {
				m.Set(fd, nv)
			}
		}
		return true
	})
}

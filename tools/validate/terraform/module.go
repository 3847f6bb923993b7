// Package terraform checks challfn's Terraform module offline: every .tf
// file parses, the resources carry the attributes and blocks a working
// deployment needs (a hand-written mini schema, schema.go), and the
// project's invariants hold (checks.go). No provider is needed.
package terraform

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Resource is one resource block.
type Resource struct {
	Type, Name string
	Body       *hclsyntax.Body
	File       string
}

func (r Resource) String() string { return fmt.Sprintf("%s.%s (%s)", r.Type, r.Name, r.File) }

// Module is a parsed Terraform module directory.
type Module struct {
	Dir       string
	Sources   map[string][]byte
	Resources []Resource
	Variables map[string]*hclsyntax.Body
	Outputs   map[string]*hclsyntax.Body
	Locals    map[string]*hclsyntax.Attribute
}

// Load parses every .tf file of dir (not recursively: one module).
func Load(dir string) (*Module, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no .tf file", dir)
	}
	sort.Strings(paths)
	m := &Module{
		Dir:       dir,
		Sources:   map[string][]byte{},
		Variables: map[string]*hclsyntax.Body{},
		Outputs:   map[string]*hclsyntax.Body{},
		Locals:    map[string]*hclsyntax.Attribute{},
	}
	p := hclparse.NewParser()
	var errs []error
	for _, path := range paths {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(path)
		m.Sources[name] = src
		f, diags := p.ParseHCL(src, name)
		if diags.HasErrors() {
			errs = append(errs, fmt.Errorf("parse: %w", diags))
			continue
		}
		body := f.Body.(*hclsyntax.Body)
		for _, b := range body.Blocks {
			switch b.Type {
			case "resource":
				if len(b.Labels) != 2 {
					errs = append(errs, fmt.Errorf("%s: resource block needs 2 labels", name))
					continue
				}
				m.Resources = append(m.Resources, Resource{Type: b.Labels[0], Name: b.Labels[1], Body: b.Body, File: name})
			case "variable":
				if _, dup := m.Variables[b.Labels[0]]; dup {
					errs = append(errs, fmt.Errorf("%s: variable %q declared twice", name, b.Labels[0]))
				}
				m.Variables[b.Labels[0]] = b.Body
			case "output":
				if _, dup := m.Outputs[b.Labels[0]]; dup {
					errs = append(errs, fmt.Errorf("%s: output %q declared twice", name, b.Labels[0]))
				}
				m.Outputs[b.Labels[0]] = b.Body
			case "locals":
				for k, a := range b.Body.Attributes {
					m.Locals[k] = a
				}
			}
		}
	}
	return m, errors.Join(errs...)
}

// LoadTFVars reads a .tfvars file (such as terraform.tfvars.example).
func LoadTFVars(path string) (map[string]cty.Value, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, diags := hclparse.NewParser().ParseHCL(src, filepath.Base(path))
	if diags.HasErrors() {
		return nil, fmt.Errorf("parse: %w", diags)
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: %w", path, diags)
	}
	vals := map[string]cty.Value{}
	for k, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s: %s: %w", path, k, diags)
		}
		vals[k] = v
	}
	return vals, nil
}

// EvalContext gives var.* (defaults, overridden by vars), the locals that
// can be computed without resources, and a subset of Terraform's functions.
// Expressions that need a resource attribute stay unevaluable.
func (m *Module) EvalContext(vars map[string]cty.Value) *hcl.EvalContext {
	vv := map[string]cty.Value{}
	for name, body := range m.Variables {
		if a, ok := body.Attributes["default"]; ok {
			if v, diags := a.Expr.Value(nil); !diags.HasErrors() {
				vv[name] = v
			}
		}
	}
	for k, v := range vars {
		vv[k] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(vv)},
		Functions: functions(),
	}
	locals := map[string]cty.Value{}
	for changed := true; changed; {
		changed = false
		ctx.Variables["local"] = cty.ObjectVal(locals)
		for k, a := range m.Locals {
			if _, done := locals[k]; done {
				continue
			}
			if v, diags := a.Expr.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
				locals[k] = v
				changed = true
			}
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	return ctx
}

func functions() map[string]function.Function {
	base64encode := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
		},
	})
	return map[string]function.Function{
		"toset":        stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tolist":       stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":        stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"merge":        stdlib.MergeFunc,
		"keys":         stdlib.KeysFunc,
		"values":       stdlib.ValuesFunc,
		"length":       stdlib.LengthFunc,
		"contains":     stdlib.ContainsFunc,
		"concat":       stdlib.ConcatFunc,
		"setproduct":   stdlib.SetProductFunc,
		"jsonencode":   stdlib.JSONEncodeFunc,
		"base64encode": base64encode,
		"lower":        stdlib.LowerFunc,
		"upper":        stdlib.UpperFunc,
		"join":         stdlib.JoinFunc,
		"regexall":     stdlib.RegexAllFunc,
		"format":       stdlib.FormatFunc,
	}
}

// Instances evaluates a resource's count/for_each and returns one context
// per instance (with each.key/each.value or count.index set). When the
// repetition cannot be evaluated, it returns the base context alone.
func (r Resource) Instances(ctx *hcl.EvalContext) []*hcl.EvalContext {
	if a, ok := r.Body.Attributes["for_each"]; ok {
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() || !v.IsWhollyKnown() || v.IsNull() {
			return []*hcl.EvalContext{ctx}
		}
		var out []*hcl.EvalContext
		for it := v.ElementIterator(); it.Next(); {
			k, val := it.Element()
			if v.Type().IsSetType() {
				k = val
			}
			c := ctx.NewChild()
			c.Variables = map[string]cty.Value{"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": val})}
			out = append(out, c)
		}
		return out
	}
	return []*hcl.EvalContext{ctx}
}

// Find walks a dotted path of nested blocks (plain or dynamic) down to an
// attribute or a block. It returns every match: blocks can repeat.
func Find(body *hclsyntax.Body, path string) (attrs []*hclsyntax.Attribute, blocks []*hclsyntax.Body) {
	parts := strings.Split(path, ".")
	bodies := []*hclsyntax.Body{body}
	for i, p := range parts {
		last := i == len(parts)-1
		var next []*hclsyntax.Body
		for _, b := range bodies {
			if last {
				if a, ok := b.Attributes[p]; ok {
					attrs = append(attrs, a)
				}
			}
			for _, blk := range b.Blocks {
				switch {
				case blk.Type == p:
					next = append(next, blk.Body)
				case blk.Type == "dynamic" && len(blk.Labels) == 1 && blk.Labels[0] == p:
					for _, c := range blk.Body.Blocks {
						if c.Type == "content" {
							next = append(next, c.Body)
						}
					}
				}
			}
		}
		if last {
			return attrs, next
		}
		bodies = next
	}
	return nil, nil
}

// source returns the text of an expression.
func (m *Module) source(file string, e hclsyntax.Expression) string {
	r := e.Range()
	src := m.Sources[file]
	if r.End.Byte > len(src) {
		return ""
	}
	return string(src[r.Start.Byte:r.End.Byte])
}

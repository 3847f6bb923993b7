package docs

// The design and the REST contract live in the repository: docs/design.md
// (decisions, cited as "docs/design.md, decision N") and docs/contract.md
// (sections, cited as "docs/contract.md §N.M"). These tests fail when a Go
// comment, a document or a comment of a script, manifest or Terraform file
// cites a document outside the repository, or a decision or section those two
// files do not have, and when a link into them names a heading they lack.

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// unit is a piece of text read as one: a Go comment group, a paragraph of a
// Markdown file, a run of comment lines of another file.
type unit struct {
	file string // slash-separated, relative to the repository root
	line int
	text string
}

// outside are citations of documents that are not in the repository: the
// design notes and reference files the project started from, and citations
// that name no file ("contract §4.4", "reference §1").
var outside = []*regexp.Regexp{
	regexp.MustCompile(`DESIGN\.md`),
	regexp.MustCompile(`\bDESIGN\s+decisions?\b`),
	regexp.MustCompile(`\.\./shared\b`),
	regexp.MustCompile(`/work/shared`),
	regexp.MustCompile(`chall-manager-api\.md`),
	regexp.MustCompile(`ecosystem\.md`),
	regexp.MustCompile(`monitoring-stack\.md`),
	regexp.MustCompile(`seed-monitoring`),
	// A file under reference/ (not a URL's /reference/ path).
	regexp.MustCompile(`(?:^|[^\w./-])reference/[\w.-]+\.(?:md|txt)\b`),
	regexp.MustCompile(`(?i)\b(?:reference|ecosystem|contract|design)\s+§`),
}

var (
	// §4.4, §12, and the lettered sections of other documents (§A.2).
	sectionRE  = regexp.MustCompile(`§([0-9]+(?:\.[0-9]+)*|[A-Za-z](?:\.[0-9]+)*)`)
	decisionRE = regexp.MustCompile(`(?i)\bdecisions?\s+(\d+)((?:\s*(?:,|and|or|&)\s*\d+)*)`)
	numberRE   = regexp.MustCompile(`\d+`)
	linkRE     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
)

const (
	designDoc   = "docs/design.md"
	contractDoc = "docs/contract.md"
	// This file is not scanned.
	self = "tools/validate/docs/citations_test.go"
)

// headings returns the numbers of the numbered headings of a Markdown file
// ("## 4.4 UpdateChallenge" → "4.4", "## 1. Contract" → "1") and its anchors.
func headings(t *testing.T, root, rel string) (numbers, anchors map[string]bool) {
	t.Helper()
	numbers, anchors = map[string]bool{}, map[string]bool{}
	num := regexp.MustCompile(`^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s`)
	inFence := false
	for _, line := range strings.Split(read(t, root, rel), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		if m := num.FindStringSubmatch(line); m != nil {
			numbers[m[1]] = true
		}
		anchors[slug(strings.TrimLeft(line, "# "))] = true
	}
	return numbers, anchors
}

// slug is GitHub's anchor of a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func slug(heading string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			sb.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// checker holds what the two documents define.
type checker struct {
	sections, decisions map[string]bool
}

func newChecker(t *testing.T, root string) checker {
	t.Helper()
	sections, _ := headings(t, root, contractDoc)
	decisions, _ := headings(t, root, designDoc)
	return checker{sections: sections, decisions: decisions}
}

// check returns what is wrong with the citations of u.
func (c checker) check(u unit) []string {
	var bad []string
	for _, re := range outside {
		if m := re.FindString(u.text); m != "" {
			bad = append(bad, "cites a document outside the repository: "+strings.Join(strings.Fields(m), " "))
		}
	}
	// §N.M: a section of docs/contract.md, named as such (inside
	// docs/contract.md itself, a bare § is its own section).
	if locs := sectionRE.FindAllStringSubmatchIndex(u.text, -1); len(locs) > 0 {
		if u.file != contractDoc && !strings.Contains(u.text[:locs[0][0]], "contract.md") {
			bad = append(bad, "cites "+u.text[locs[0][0]:locs[0][1]]+" without naming docs/contract.md before it")
		}
		for _, l := range locs {
			if n := u.text[l[2]:l[3]]; !c.sections[n] {
				bad = append(bad, "cites §"+n+", which docs/contract.md does not have")
			}
		}
	}
	// decision N: a decision of docs/design.md, named as such.
	if locs := decisionRE.FindAllStringIndex(u.text, -1); len(locs) > 0 {
		if u.file != designDoc && !strings.Contains(u.text[:locs[0][0]], "design.md") {
			bad = append(bad, "cites "+u.text[locs[0][0]:locs[0][1]]+" without naming docs/design.md before it")
		}
		for _, l := range locs {
			for _, n := range numberRE.FindAllString(u.text[l[0]:l[1]], -1) {
				if !c.decisions[n] {
					bad = append(bad, "cites decision "+n+", which docs/design.md does not have")
				}
			}
		}
	}
	return bad
}

// skipDir: hidden folders (.git, .bin, .run...), fuzz corpora and fixtures.
func skipDir(name string) bool {
	return strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "vendor"
}

// commented are the files other than Go and Markdown whose comments are read.
func commented(name string) bool {
	switch filepath.Ext(name) {
	case ".sh", ".yaml", ".yml", ".tf", ".mod", ".example", ".toml":
		return true
	}
	return name == "Dockerfile"
}

// units reads every citation-bearing piece of text of the repository.
func units(t *testing.T, root string) []unit {
	t.Helper()
	var out []unit
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == self: // it spells out the patterns it looks for
		case strings.HasSuffix(rel, ".go"):
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				t.Errorf("%s: %v", rel, err)
				return nil
			}
			for _, cg := range f.Comments {
				out = append(out, unit{rel, fset.Position(cg.Pos()).Line, cg.Text()})
			}
		case strings.HasSuffix(rel, ".md"):
			out = append(out, paragraphs(t, path, rel)...)
		case commented(d.Name()):
			out = append(out, commentRuns(t, path, rel)...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// paragraphs splits a Markdown file at blank lines.
func paragraphs(t *testing.T, path, rel string) []unit {
	t.Helper()
	var out []unit
	var cur []string
	start := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, unit{rel, start, strings.Join(cur, "\n")})
			cur = nil
		}
	}
	for i, line := range lines(t, path) {
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if len(cur) == 0 {
			start = i + 1
		}
		cur = append(cur, line)
	}
	flush()
	return out
}

// commentRuns groups consecutive comment lines (# or //) of a file. A line
// that is not a comment is read alone, for citations of outside documents
// in trailing comments and strings.
func commentRuns(t *testing.T, path, rel string) []unit {
	t.Helper()
	var out []unit
	var cur []string
	start := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, unit{rel, start, strings.Join(cur, "\n")})
			cur = nil
		}
	}
	for i, line := range lines(t, path) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "//") {
			if len(cur) == 0 {
				start = i + 1
			}
			cur = append(cur, trimmed)
			continue
		}
		flush()
		if strings.ContainsAny(line, "#§") || strings.Contains(line, "//") {
			out = append(out, unit{rel, i + 1, line})
		}
	}
	flush()
	return out
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

// Every citation in the repository names docs/design.md or docs/contract.md
// and a decision or section they have; none names a document outside.
func TestCitationsStayInTheRepository(t *testing.T) {
	root := repoRoot(t)
	c := newChecker(t, root)
	cited := 0
	for _, u := range units(t, root) {
		if u.file != contractDoc && u.file != designDoc &&
			(strings.Contains(u.text, "contract.md") || strings.Contains(u.text, "design.md")) {
			cited++
		}
		for _, msg := range c.check(u) {
			t.Errorf("%s:%d: %s", u.file, u.line, msg)
		}
	}
	// The code cites the two documents some seventy times: far fewer means the
	// walk missed files.
	if cited < 60 {
		t.Errorf("only %d pieces of text cite docs/design.md or docs/contract.md; the scan is not working", cited)
	}
}

// The numbers code comments cite stay what they were: decisions 1–10 and the
// sections of upstream's contract, which new material may only extend.
func TestNumberingIsStable(t *testing.T) {
	root := repoRoot(t)
	c := newChecker(t, root)
	for n := 1; n <= 10; n++ {
		if !c.decisions[strconv.Itoa(n)] {
			t.Errorf("docs/design.md has no heading for decision %d", n)
		}
	}
	subsections := map[int]int{1: 7, 2: 3, 3: 5, 4: 15, 6: 4, 7: 4, 8: 6, 9: 4, 10: 2, 11: 2, 12: 10}
	for top := 0; top <= 13; top++ {
		if !c.sections[strconv.Itoa(top)] {
			t.Errorf("docs/contract.md has no section §%d", top)
		}
		for sub := 1; sub <= subsections[top]; sub++ {
			if n := strconv.Itoa(top) + "." + strconv.Itoa(sub); !c.sections[n] {
				t.Errorf("docs/contract.md has no section §%s", n)
			}
		}
	}
}

// Links into docs/design.md and docs/contract.md (from any Markdown file,
// and within those two) name headings they have.
func TestLinksIntoTheDesignResolve(t *testing.T) {
	root := repoRoot(t)
	anchors := map[string]map[string]bool{}
	for _, doc := range []string{designDoc, contractDoc} {
		_, a := headings(t, root, doc)
		anchors[doc] = a
	}
	links := 0
	for _, u := range units(t, root) {
		if !strings.HasSuffix(u.file, ".md") {
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(u.text, -1) {
			target, frag, _ := strings.Cut(m[1], "#")
			if strings.Contains(target, "://") {
				continue
			}
			doc := u.file
			if target != "" {
				doc = filepath.ToSlash(filepath.Join(filepath.Dir(u.file), target))
			}
			a, ok := anchors[doc]
			if !ok {
				continue
			}
			links++
			if frag != "" && !a[frag] {
				t.Errorf("%s:%d: link %s names no heading of %s", u.file, u.line, m[1], doc)
			}
		}
	}
	if links < 20 {
		t.Errorf("only %d links into the design documents found; the scan is not working", links)
	}
}

// The checker itself: what it must refuse and what it must accept.
func TestCitationChecker(t *testing.T) {
	c := checker{
		sections:  map[string]bool{"1": true, "1.3": true, "4": true, "4.4": true, "4.10": true, "12.6": true},
		decisions: map[string]bool{"2": true, "3": true, "10": true},
	}
	for _, tc := range []struct {
		text string
		ok   bool
	}{
		{"see docs/contract.md §4.4 step 8, §12.6", true},
		{"(docs/contract.md §1.3, §4–§4.10)", true},
		{"docs/design.md, decisions 2 and 3", true},
		{"the refill decision (docs/contract.md §4)", true},
		{"https://protobuf.dev/reference/protobuf/google.protobuf/#field-mask", true},
		{"a scenario's reference/tag", true},
		{"(DESIGN decision 10)", false},
		{"cites decision 10 alone", false},
		{"docs/design.md, decision 11", false},
		{"(contract §4.4)", false},
		{"(reference §1.3)", false},
		{"the contract's parsing rules (§4)", false},
		{"docs/contract.md §4.99", false},
		{"(ecosystem.md §A.2)", false},
		{"`../../shared/DESIGN.md` next to the checkout", false},
		{"see reference/chall-manager-api.md", false},
		{"(monitoring-stack.md, part 2)", false},
	} {
		bad := c.check(unit{file: "x.go", text: tc.text})
		if tc.ok != (len(bad) == 0) {
			t.Errorf("%q: got %v, want ok=%v", tc.text, bad, tc.ok)
		}
	}
}

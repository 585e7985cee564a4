// Package corpus loads the repository's sample conversations, the JSON files
// of testdata/conversations at the module root: realistic chats in several
// languages and scripts, emoji, OpenAI content-part arrays, messages near
// the default 64 KiB limit, and ids that a NATS subject cannot carry as
// they are. The benchmark harness publishes them (bench --corpus); tests and
// demos may load them the same way.
//
// A file holds one conversation:
//
//	{"description": "...", "user": "...", "device": "...", "agent": "...",
//	 "messages": [{"role": "user", "content": "...", "message_id": "..."}, ...]}
//
// Each message is the body a producer publishes, kept as written.
package corpus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontext/chatbuf/chat"
)

// Conversation is one file of the corpus.
type Conversation struct {
	Name        string // the file's name without .json
	Description string
	Conv        chat.Conversation
	// Messages are the bodies, compact JSON objects, in publishing order.
	Messages []json.RawMessage
}

// Len is the number of messages in convs.
func Len(convs []Conversation) int {
	n := 0
	for _, c := range convs {
		n += len(c.Messages)
	}
	return n
}

// Dir returns testdata/conversations of the module that holds the working
// directory: the nearest directory upwards with a go.mod.
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("corpus: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "testdata", "conversations"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("corpus: no go.mod in %s or above it", wd)
		}
	}
}

// Default loads the corpus of the module that holds the working directory.
func Default() ([]Conversation, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	return Load(dir)
}

// Load reads every *.json file of dir, by name.
func Load(dir string) ([]Conversation, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("corpus: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("corpus: no *.json files in %s", dir)
	}
	slices.Sort(files)
	out := make([]Conversation, 0, len(files))
	for _, f := range files {
		c, err := loadFile(f)
		if err != nil {
			return nil, fmt.Errorf("corpus: %s: %w", f, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func loadFile(path string) (Conversation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Conversation{}, err
	}
	var f struct {
		Description string            `json:"description"`
		User        string            `json:"user"`
		Device      string            `json:"device"`
		Agent       string            `json:"agent"`
		Messages    []json.RawMessage `json:"messages"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Conversation{}, err
	}
	c := Conversation{
		Name:        strings.TrimSuffix(filepath.Base(path), ".json"),
		Description: f.Description,
		Conv:        chat.Conversation{User: f.User, Device: f.Device, Agent: f.Agent},
	}
	if c.Conv.User == "" || c.Conv.Device == "" || c.Conv.Agent == "" {
		return c, errors.New("user, device and agent are required")
	}
	if len(f.Messages) == 0 {
		return c, errors.New("no messages")
	}
	for i, m := range f.Messages {
		var buf bytes.Buffer
		if err := json.Compact(&buf, m); err != nil {
			return c, fmt.Errorf("message %d: %w", i+1, err)
		}
		if buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return c, fmt.Errorf("message %d: not a JSON object", i+1)
		}
		c.Messages = append(c.Messages, buf.Bytes())
	}
	return c, nil
}

package chat

import (
	"bytes"
	"encoding/json"
	"testing"
)

// members must pick exactly what encoding/json finds under the exact names.
func FuzzMembersMatchesUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"role":"user","content":"hi"}`,
		` { "role" : "user" , "content" : [ {"type":"text","text":"a}\\"]"} ] , "metadata": {"a":[1,{"b":"}"}]} } `,
		`{"role":"x","role":"user","ROLE":"tool","\u0072ole":"system"}`,
		`{"content":"\"quoted\" \\ back","n":-1.5e3,"t":true,"z":null}`,
		`[1,2]`, `"s"`, `12`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		var ref map[string]json.RawMessage
		refErr := json.Unmarshal(body, &ref)
		w, err := members(body)
		if (refErr != nil) != (err != nil) {
			t.Fatalf("members error %v, encoding/json error %v, for %q", err, refErr, body)
		}
		if err != nil {
			return
		}
		for name, got := range map[string]json.RawMessage{
			"role": w.Role, "content": w.Content, "message_id": w.MessageID, "timestamp": w.Timestamp,
			"metadata": w.Metadata, "user_id": w.UserID, "device_id": w.DeviceID, "agent_id": w.AgentID,
		} {
			if want := ref[name]; !bytes.Equal(got, want) {
				t.Fatalf("%s: members %q, encoding/json %q, for %q", name, got, want, body)
			}
		}
	})
}

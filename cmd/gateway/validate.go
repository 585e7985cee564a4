package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

// verr is one validation error as FastAPI (pydantic 2) writes it.
type verr struct {
	Type  string          `json:"type"`
	Loc   []any           `json:"loc"`
	Msg   string          `json:"msg"`
	Input json.RawMessage `json:"input"`
	Ctx   ordered         `json:"ctx,omitempty"`
}

// ordered is a JSON object written with its members in the order given:
// name, value, name, value...
type ordered []any

func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i+1 < len(o); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(o[i])
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(o[i+1])
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func at(loc []any, more ...any) []any {
	out := make([]any, 0, len(loc)+len(more))
	return append(append(out, loc...), more...)
}

func missing(loc []any, input json.RawMessage) verr {
	return verr{Type: "missing", Loc: loc, Msg: "Field required", Input: orNull(input)}
}

func wrongType(loc []any, typ, msg string, input json.RawMessage) verr {
	return verr{Type: typ, Loc: loc, Msg: msg, Input: orNull(input)}
}

// valueErr is a check of chatbuf's beyond OpenContext's models (roles, ids,
// sizes), in pydantic's form for a validator's ValueError.
func valueErr(loc []any, input json.RawMessage, format string, args ...any) verr {
	e := fmt.Sprintf(format, args...)
	return verr{Type: "value_error", Loc: loc, Msg: "Value error, " + e, Input: orNull(input), Ctx: ordered{"error", e}}
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

func unprocessable(w http.ResponseWriter, errs []verr) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": errs})
}

// object is a JSON object's members by their exact names.
type object map[string]json.RawMessage

// readObject reads the request body as a JSON object. It answers 413 for a
// body over the limit and 422 for a body that is missing, not JSON or not
// an object, and returns false then.
func (g *gateway) readObject(w http.ResponseWriter, r *http.Request) (object, json.RawMessage, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.o.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{
				"detail": fmt.Sprintf("Request body too large: the limit is %d bytes (GATEWAY_MAX_BODY_BYTES)", tooLarge.Limit)})
			return nil, nil, false
		}
		g.log.Debug("http: cannot read the body", "path", r.URL.Path, "error", err)
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "cannot read the request body: " + err.Error()})
		return nil, nil, false
	}
	obj, errs := parseObject(body, []any{"body"})
	if errs != nil {
		unprocessable(w, errs)
		return nil, nil, false
	}
	return obj, bytes.TrimSpace(body), true
}

// parseObject parses raw as a JSON object; loc names it in errors.
func parseObject(raw []byte, loc []any) (object, []verr) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, []verr{missing(loc, nil)}
	}
	if !utf8.Valid(trimmed) || !json.Valid(trimmed) {
		var v any
		err := json.Unmarshal(trimmed, &v)
		pos := 0
		var se *json.SyntaxError
		if errors.As(err, &se) {
			pos = int(se.Offset)
		}
		msg := "invalid UTF-8"
		if err != nil {
			msg = strings.TrimPrefix(err.Error(), "json: ")
		}
		return nil, []verr{{Type: "json_invalid", Loc: at(loc, pos), Msg: "JSON decode error",
			Input: json.RawMessage("{}"), Ctx: ordered{"error", msg}}}
	}
	if trimmed[0] != '{' {
		return nil, []verr{wrongType(loc, "model_attributes_type",
			"Input should be a valid dictionary or object to extract fields from", trimmed)}
	}
	var obj object
	if err := json.Unmarshal(trimmed, &obj); err != nil { // json.Valid passed: cannot happen
		return nil, []verr{valueErr(loc, trimmed, "%v", err)}
	}
	return obj, nil
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// str reads an optional string member: ok is false (and an error added)
// when it is neither a string nor null.
func str(obj object, name string, loc []any, errs *[]verr) (s string, given bool) {
	raw := obj[name]
	if isNull(raw) {
		return "", false
	}
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		*errs = append(*errs, wrongType(at(loc, name), "string_type", "Input should be a valid string", raw))
		return "", false
	}
	return s, true
}

// boolean reads an optional boolean as pydantic does in lax mode.
func boolean(obj object, name string, loc []any, errs *[]verr) bool {
	raw := obj[name]
	if isNull(raw) {
		return false
	}
	switch strings.ToLower(strings.Trim(string(raw), `"`)) {
	case "true", "1", "yes", "on", "t", "y":
		return true
	case "false", "0", "no", "off", "f", "n":
		return false
	}
	*errs = append(*errs, wrongType(at(loc, name), "bool_type", "Input should be a valid boolean", raw))
	return false
}

// list reads a required JSON array member.
func list(obj object, name string, loc []any, whole json.RawMessage, errs *[]verr) ([]json.RawMessage, bool) {
	raw, present := obj[name]
	if !present {
		*errs = append(*errs, missing(at(loc, name), whole))
		return nil, false
	}
	var items []json.RawMessage
	if isNull(raw) || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		*errs = append(*errs, wrongType(at(loc, name), "list_type", "Input should be a valid list", raw))
		return nil, false
	}
	return items, true
}

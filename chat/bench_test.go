package chat_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// typicalBody is a typical 256-byte chat message.
var typicalBody = func() []byte {
	const head = `{"role":"user","content":"`
	const tail = `","message_id":"0b9f8e2c-5d7a-4c1e-9a3f-2e6d8c4b1a70","timestamp":"2025-11-26T10:00:00.123Z","metadata":{"lang":"en","client":"ios/3.2.1"}}`
	b := []byte(head)
	for len(b)+len(tail) < 256 {
		b = append(b, "hello "[len(b)%6])
	}
	b = append(b, tail...)
	if len(b) != 256 {
		panic(fmt.Sprintf("typical body is %d bytes", len(b)))
	}
	return b
}()

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalBody)))
	for b.Loop() {
		if _, err := chat.Decode(typicalBody, alice, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewRecord(b *testing.B) {
	m, err := chat.Decode(typicalBody, alice, 0)
	if err != nil {
		b.Fatal(err)
	}
	at := time.UnixMilli(1764151200123)
	b.ReportAllocs()
	for b.Loop() {
		chat.NewRecord(&m, 0, 1017, false, at)
	}
}

// BenchmarkNewRecordFrom is NewRecord keeping the message's origin: the
// time CHAT_IN stored it and a traceparent.
func BenchmarkNewRecordFrom(b *testing.B) {
	m, err := chat.Decode(typicalBody, alice, 0)
	if err != nil {
		b.Fatal(err)
	}
	at := time.UnixMilli(1764151200123)
	o := chat.Origin{Stored: at.Add(-40 * time.Millisecond), TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	b.ReportAllocs()
	for b.Loop() {
		chat.NewRecordFrom(&m, 0, 1017, false, at, o)
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	m, err := chat.Decode(typicalBody, alice, 0)
	if err != nil {
		b.Fatal(err)
	}
	records := make([]chat.Record, 10)
	for i := range records {
		raw := chat.NewRecord(&m, 0, uint64(1000+i), false, time.UnixMilli(1764151200123+int64(i)))
		if records[i], err = chat.ParseRecord(raw); err != nil {
			b.Fatal(err)
		}
	}
	created := time.UnixMilli(1764151300000)
	b.ReportAllocs()
	for b.Loop() {
		chat.EncodeBatch(alice, 42, chat.TriggerSize, created, records)
	}
}

func BenchmarkKeys(b *testing.B) {
	keys := chat.NewKeys("")
	c := chat.Conversation{User: "%{ü:ser}%", Device: "phone:1", Agent: "{bot}"}
	b.ReportAllocs()
	for b.Loop() {
		_ = keys.Buffer(c)
	}
}

// TestHotPathAllocations pins the allocations the benchmarks above report
// for the per-message hot path: a record is one allocation (its size is
// reserved up front), Decode allocates only the strings it returns
// (role, message_id, timestamp), none for the member names it scans, and
// plain ids cost nothing to take out of a subject or put into one.
func TestHotPathAllocations(t *testing.T) {
	m, err := chat.Decode(typicalBody, alice, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1764151200123)
	if n := testing.AllocsPerRun(100, func() { chat.NewRecord(&m, 0, 1017, false, at) }); n != 1 {
		t.Errorf("NewRecord: %v allocations, want 1", n)
	}
	o := chat.Origin{Stored: at.Add(-40 * time.Millisecond), TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if n := testing.AllocsPerRun(100, func() { chat.NewRecordFrom(&m, 0, 1017, false, at, o) }); n != 1 {
		t.Errorf("NewRecordFrom: %v allocations, want 1", n)
	}
	if n := leastAllocs(5, func() { _, _ = chat.Decode(typicalBody, alice, 0) }); n > 3 {
		t.Errorf("Decode: %v allocations, want at most 3", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		_, _ = chat.ParseSubject("opencontext.chat", "in", "opencontext.chat.in.user-4711.phone-2.assistant")
	}); n != 0 {
		t.Errorf("ParseSubject of plain ids: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = chat.EncodeToken("user-4711") }); n != 0 {
		t.Errorf("EncodeToken of a plain id: %v allocations, want 0", n)
	}
}

// leastAllocs is the least of several testing.AllocsPerRun measurements.
// Decode validates with json.Valid, whose scanner comes from a sync.Pool,
// and under the race detector sync.Pool drops a random share of what is put
// back: one measurement of 100 runs then counts the scanners it had to make
// again. The least of several is what the code itself allocates.
func leastAllocs(tries int, f func()) float64 {
	least := testing.AllocsPerRun(100, f)
	for range tries - 1 {
		least = min(least, testing.AllocsPerRun(100, f))
	}
	return least
}

// BenchmarkParseSubject is the per-message subject check of plain ids:
// nothing to decode, so nothing allocated.
func BenchmarkParseSubject(b *testing.B) {
	const subject = "opencontext.chat.in.user-4711.phone-2.assistant"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := chat.ParseSubject("opencontext.chat", "in", subject); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseSubjectEncoded is the same check for ids with encoded bytes.
func BenchmarkParseSubjectEncoded(b *testing.B) {
	const subject = "opencontext.chat.in.alice%2Esmith@example%2Ecom.my%20phone.bot"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := chat.ParseSubject("opencontext.chat", "in", subject); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSubject(b *testing.B) {
	c := chat.Conversation{User: "user-4711", Device: "phone-2", Agent: "assistant"}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Subject("opencontext.chat", "in")
	}
}

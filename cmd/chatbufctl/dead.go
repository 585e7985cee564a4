package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/stream"
)

// reasonBatchRejected is the dead-letter reason of a batch that
// CHAT_FLUSHED refused: redriven to its P.flushed subject.
const reasonBatchRejected = "batch_rejected"

func (a *app) dead(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: dead needs ls, show, redrive or purge", errUsage)
	}
	switch args[0] {
	case "ls":
		return a.deadLs(ctx, args[1:])
	case "show":
		return a.deadShow(ctx, args[1:])
	case "redrive":
		return a.deadRedrive(ctx, args[1:])
	case "purge":
		return a.deadPurge(ctx, args[1:])
	}
	return fmt.Errorf("%w: dead %q: want ls, show, redrive or purge", errUsage, args[0])
}

// letter is one dead letter.
type letter struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason"`
	Subject   string    `json:"original_subject"`
	Error     string    `json:"error"`
	Truncated bool      `json:"truncated"`
	Size      int       `json:"size"`
	MsgID     string    `json:"msg_id,omitempty"`

	data   []byte
	header nats.Header
}

func (a *app) newLetter(subject string, seq uint64, t time.Time, h nats.Header, data []byte) letter {
	reason := h.Get(stream.HeaderReason)
	if reason == "" {
		reason = strings.TrimPrefix(subject, a.cfg.streams().Prefix+".dead.")
	}
	return letter{Seq: seq, Time: t.UTC(), Reason: reason, Subject: h.Get(stream.HeaderSubject), Error: h.Get(stream.HeaderError),
		Truncated: strings.EqualFold(h.Get(stream.HeaderTruncated), "true"), Size: len(data), MsgID: h.Get(jetstream.MsgIDHeader),
		data: data, header: h}
}

func (a *app) deadSubject(reason string) (string, error) {
	sc := a.cfg.streams()
	if reason == "" {
		return sc.All(stream.KindDead), nil
	}
	if strings.ContainsAny(reason, ".*> ") {
		return "", fmt.Errorf("%w: --reason %q: not a reason", errUsage, reason)
	}
	return sc.Prefix + "." + stream.KindDead + "." + reason, nil
}

// letters reads up to limit dead letters from sequence from on, with an
// ordered consumer on CHAT_DEAD filtered to the reason.
func (a *app) letters(ctx context.Context, reason string, from uint64, limit int) ([]letter, bool, error) {
	subj, err := a.deadSubject(reason)
	if err != nil {
		return nil, false, err
	}
	_, js, err := a.jetstream()
	if err != nil {
		return nil, false, err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := js.OrderedConsumer(ctx, a.cfg.streams().DeadStream, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", a.cfg.streams().DeadStream, err)
	}
	var out []letter
	more := false
	for len(out) < limit {
		batch, err := cons.FetchNoWait(limit - len(out))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", a.cfg.streams().DeadStream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, false, err
			}
			out = append(out, a.newLetter(m.Subject(), md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data()))
			more = md.NumPending > 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, false, fmt.Errorf("%s: %w", a.cfg.streams().DeadStream, err)
		}
		if !more || got == 0 {
			break
		}
	}
	if out == nil {
		out = []letter{}
	}
	return out, more, nil
}

type deadLsOut struct {
	DeadLetters []letter `json:"dead_letters"`
	NextCursor  string   `json:"next_cursor"`
}

func (a *app) deadLs(ctx context.Context, args []string) error {
	fs := a.flags("dead ls")
	reason := fs.String("reason", "", "only this reason")
	limit := fs.Int("limit", 50, "dead letters per page")
	cursor := fs.Uint64("cursor", 0, "start at this CHAT_DEAD sequence (next_cursor of the previous page)")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: dead ls takes no arguments", errUsage)
	}
	if *limit < 1 {
		return fmt.Errorf("%w: --limit must be at least 1", errUsage)
	}
	ls, more, err := a.letters(ctx, *reason, *cursor, *limit)
	if err != nil {
		return err
	}
	out := deadLsOut{DeadLetters: ls}
	if more && len(ls) > 0 {
		out.NextCursor = strconv.FormatUint(ls[len(ls)-1].Seq+1, 10)
	}
	return a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "SEQ\tTIME\tREASON\tSUBJECT\tSIZE\tERROR")
		for _, l := range ls {
			size := strconv.Itoa(l.Size)
			if l.Truncated {
				size += " (truncated)"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", l.Seq, l.Time.Format(time.RFC3339), l.Reason, l.Subject, size, clip(l.Error, 80))
		}
		if out.NextCursor != "" {
			fmt.Fprintf(w, "(more: --cursor %s)\n", out.NextCursor)
		}
	})
}

type deadShowOut struct {
	letter
	Headers       map[string][]string `json:"headers"`
	Payload       string              `json:"payload"`
	PayloadBase64 string              `json:"payload_base64"`
}

func (a *app) deadShow(ctx context.Context, args []string) error {
	fs := a.flags("dead show")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: dead show takes one CHAT_DEAD sequence", errUsage)
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not a sequence number", errUsage, pos[0])
	}
	l, err := a.getLetter(ctx, seq)
	if err != nil {
		return err
	}
	out := deadShowOut{letter: l, Headers: l.header, Payload: string(l.data), PayloadBase64: base64.StdEncoding.EncodeToString(l.data)}
	return a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "seq\t%d\n", l.Seq)
		fmt.Fprintf(w, "time\t%s\n", l.Time.Format(time.RFC3339Nano))
		fmt.Fprintf(w, "reason\t%s\n", l.Reason)
		fmt.Fprintf(w, "original subject\t%s\n", l.Subject)
		fmt.Fprintf(w, "error\t%s\n", l.Error)
		fmt.Fprintf(w, "truncated\t%v\n", l.Truncated)
		for _, k := range slices.Sorted(maps.Keys(l.header)) {
			fmt.Fprintf(w, "header %s\t%s\n", k, strings.Join(l.header[k], ", "))
		}
		fmt.Fprintf(w, "payload (%d bytes)\n%s\n", l.Size, l.data)
	})
}

func (a *app) getLetter(ctx context.Context, seq uint64) (letter, error) {
	_, js, err := a.jetstream()
	if err != nil {
		return letter{}, err
	}
	s, err := js.Stream(ctx, a.cfg.streams().DeadStream)
	if err != nil {
		return letter{}, fmt.Errorf("%s: %w", a.cfg.streams().DeadStream, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return letter{}, fmt.Errorf("%s seq %d: %w", a.cfg.streams().DeadStream, seq, err)
	}
	return a.newLetter(m.Subject, m.Sequence, m.Time, m.Header, m.Data), nil
}

// redriven is what redrive did with one dead letter.
type redriven struct {
	Seq     uint64 `json:"seq"`
	Reason  string `json:"reason"`
	Subject string `json:"subject"`
	MsgID   string `json:"msg_id,omitempty"`
	// Result: redriven (published, dead letter deleted), kept (published,
	// --keep), duplicate (the target stream had this Nats-Msg-Id within
	// its duplicate window: published before), refused, failed.
	Result string `json:"result"`
	Why    string `json:"why,omitempty"`
}

type redriveOut struct {
	Letters    []redriven `json:"letters"`
	Redriven   int        `json:"redriven"`
	Duplicates int        `json:"duplicates"`
	Refused    int        `json:"refused"`
	Failed     int        `json:"failed"`
}

// Headers of a dead letter that are not the original message's.
var deadOnlyHeaders = []string{stream.HeaderReason, stream.HeaderError, stream.HeaderSubject, stream.HeaderTruncated, jetstream.MsgIDHeader}

func (a *app) deadRedrive(ctx context.Context, args []string) error {
	fs := a.flags("dead redrive")
	reason := fs.String("reason", "", "only this reason")
	limit := fs.Int("limit", 100, "at most this many dead letters")
	keep := fs.Bool("keep", false, "republish without deleting the dead letters")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: dead redrive takes no arguments", errUsage)
	}
	ls, _, err := a.letters(ctx, *reason, 0, *limit)
	if err != nil {
		return err
	}
	_, js, err := a.jetstream()
	if err != nil {
		return err
	}
	dead, err := js.Stream(ctx, a.cfg.streams().DeadStream)
	if err != nil {
		return err
	}
	out := redriveOut{Letters: []redriven{}}
	for _, l := range ls {
		r := a.redriveOne(ctx, js, dead, l, *keep)
		switch r.Result {
		case "redriven", "kept":
			out.Redriven++
		case "duplicate":
			out.Duplicates++
		case "refused":
			out.Refused++
		default:
			out.Failed++
		}
		out.Letters = append(out.Letters, r)
	}
	if err := a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "SEQ\tREASON\tTO\tNATS-MSG-ID\tRESULT")
		for _, r := range out.Letters {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s %s\n", r.Seq, r.Reason, r.Subject, r.MsgID, r.Result, r.Why)
		}
		fmt.Fprintf(w, "%d redriven, %d already redriven (duplicates), %d refused, %d failed\n", out.Redriven, out.Duplicates, out.Refused, out.Failed)
	}); err != nil {
		return err
	}
	if out.Failed > 0 {
		return fmt.Errorf("%d dead letters not redriven", out.Failed)
	}
	return nil
}

// redriveOne republishes one dead letter's payload to its original subject
// and deletes it once the PubAck arrived.
func (a *app) redriveOne(ctx context.Context, js jetstream.JetStream, dead jetstream.Stream, l letter, keep bool) redriven {
	r := redriven{Seq: l.Seq, Reason: l.Reason, Subject: l.Subject}
	sc := a.cfg.streams()
	refuse := func(why string) redriven { r.Result, r.Why = "refused", why; return r }
	if l.Truncated {
		return refuse("truncated: the dead letter is not the original payload")
	}
	if l.Reason == reasonBatchRejected {
		if !strings.HasPrefix(l.Subject, sc.Prefix+"."+stream.KindFlushed+".") {
			return refuse(fmt.Sprintf("%s %q is not a %s.%s subject", stream.HeaderSubject, l.Subject, sc.Prefix, stream.KindFlushed))
		}
		var b struct {
			BatchID string `json:"batch_id"`
		}
		if err := json.Unmarshal(l.data, &b); err != nil || b.BatchID == "" {
			return refuse("no batch_id in the batch")
		}
		r.MsgID = b.BatchID
	} else {
		if !strings.HasPrefix(l.Subject, sc.Prefix+"."+stream.KindIn+".") {
			return refuse(fmt.Sprintf("%s %q is not a %s.%s subject", stream.HeaderSubject, l.Subject, sc.Prefix, stream.KindIn))
		}
		r.MsgID = "redrive-" + strconv.FormatUint(l.Seq, 10)
	}
	msg := &nats.Msg{Subject: l.Subject, Data: l.data, Header: nats.Header{}}
	for k, vs := range l.header {
		msg.Header[k] = vs
	}
	for _, k := range deadOnlyHeaders {
		msg.Header.Del(k)
	}
	msg.Header.Set(jetstream.MsgIDHeader, r.MsgID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		r.Result, r.Why = "failed", err.Error()
		return r
	}
	r.Result = "redriven"
	if ack.Duplicate {
		r.Result = "duplicate"
	}
	if keep {
		if r.Result == "redriven" {
			r.Result = "kept"
		}
		return r
	}
	if err := dead.DeleteMsg(ctx, l.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		r.Result, r.Why = "failed", fmt.Sprintf("published, but the dead letter was not deleted: %v (a new redrive within the duplicate window does not publish it again)", err)
	}
	return r
}

type purgeOut struct {
	Reason string `json:"reason,omitempty"`
	Purged uint64 `json:"purged"`
}

func (a *app) deadPurge(ctx context.Context, args []string) error {
	fs := a.flags("dead purge")
	reason := fs.String("reason", "", "only this reason")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: dead purge takes no arguments", errUsage)
	}
	subj, err := a.deadSubject(*reason)
	if err != nil {
		return err
	}
	_, js, err := a.jetstream()
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, a.cfg.streams().DeadStream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	if !*yes {
		what := "every dead letter"
		if *reason != "" {
			what = "the dead letters of reason " + *reason
		}
		if f, ok := a.stdin.(*os.File); !ok || !isTerminal(f) {
			return fmt.Errorf("would purge %s (%d); not a terminal to confirm on: add --yes", what, n)
		}
		fmt.Fprintf(a.stderr, "Purge %s (%d) from %s? [y/N] ", what, n, a.cfg.streams().DeadStream)
		line, _ := bufio.NewReader(a.stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not purged")
		}
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return err
	}
	out := purgeOut{Reason: *reason, Purged: n}
	return a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "purged %d dead letters\n", n)
	})
}

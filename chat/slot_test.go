package chat_test

import (
	"testing"

	"github.com/opencontext/chatbuf/chat"
)

func TestSlot(t *testing.T) {
	// Reference values from Redis's CLUSTER KEYSLOT.
	tests := []struct {
		key  string
		want int
	}{
		{"foo", 12182},
		{"123456789", 12739},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"foo{}{bar}", 8363},
		{"foo{{bar}}zap", 4015},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := chat.Slot(tc.key); got != tc.want {
				t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.want)
			}
		})
	}
}

func TestSlotTagCoversEverySlot(t *testing.T) {
	for slot := range chat.SlotCount {
		tag := chat.SlotTag(slot)
		if got := chat.Slot("x:{" + tag + "}"); got != slot {
			t.Fatalf("SlotTag(%d) = %q, which is in slot %d", slot, tag, got)
		}
	}
}

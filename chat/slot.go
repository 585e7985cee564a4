package chat

import (
	"strconv"
	"strings"
	"sync"
)

// SlotCount is the number of Redis Cluster hash slots.
const SlotCount = 16384

// Slot is the Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash
// tag (the part between the first { and the next }, when not empty), or of
// the whole key, modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % SlotCount)
}

// SlotTag returns a short hash tag whose slot is slot: a key "...{tag}..."
// built with it lands in that slot.
func SlotTag(slot int) string {
	slotTagsOnce.Do(fillSlotTags)
	return slotTags[slot]
}

var (
	slotTagsOnce sync.Once
	slotTags     [SlotCount]string
)

func fillSlotTags() {
	left := SlotCount
	for i := 0; left > 0; i++ {
		tag := "s" + strconv.Itoa(i)
		if s := crc16(tag) % SlotCount; slotTags[s] == "" {
			slotTags[s] = tag
			left--
		}
	}
}

// crc16 is CRC-16/XMODEM, as Redis Cluster computes it.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

package main

// worstBatchBytes bounds the JSON of a batch holding one message of n bytes:
// the message in "messages" and again in "content_text", each of which JSON
// escaping can grow up to six times (\u00XX), and the batch's own members.
func worstBatchBytes(n int) int { return 2*6*n + 4096 }

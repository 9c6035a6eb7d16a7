"""Where events go: the bus that numbers them, the JSONL event log, the websocket hub, the console."""

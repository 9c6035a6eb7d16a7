// AudioWorklet: the microphone's samples (Float32, the context's rate) -> little-endian int16 mono blocks
// of about 50 ms, each with its peak level, posted to the page (which sends them to /ingest).

const BLOCK_S = 0.05;

class IngestCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.max(128, Math.round(sampleRate * BLOCK_S));
    this.buf = new Int16Array(this.size);
    this.fill = 0;
    this.peak = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no track connected yet
    const ch = input[0];
    for (let i = 0; i < ch.length; i += 1) {
      // Downmix is done by the browser (channelCount 1); clamp and scale to int16.
      const x = Math.max(-1, Math.min(1, ch[i]));
      const a = Math.abs(x);
      if (a > this.peak) this.peak = a;
      this.buf[this.fill] = x < 0 ? Math.round(x * 32768) : Math.round(x * 32767);
      this.fill += 1;
      if (this.fill === this.size) {
        const out = this.buf.buffer; // Int16Array is little-endian on every platform browsers run on
        this.port.postMessage({ pcm: out, peak: this.peak }, [out]);
        this.buf = new Int16Array(this.size);
        this.fill = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("ingest-capture", IngestCapture);

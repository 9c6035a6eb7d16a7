#!/usr/bin/env bash
# Regenerates the bundled demo recording that `emostream run` (and `make run`) replays by default:
#   stream/assets/demo.flac  16 kHz mono, seven short dialogue lines of different emotions with gaps
#   stream/assets/demo.csv   the ground truth (start_s,end_s,text,emotion) for `emostream evaluate`
# Needs espeak-ng and sox. The output is deterministic for given espeak-ng and sox versions (sox -R: a
# fixed seed for the dither it adds when resampling).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${DEMO_OUT:-stream/assets}  # DEMO_OUT: write elsewhere (to try other lines)
mkdir -p "$out"
for tool in espeak-ng sox soxi; do
  command -v "$tool" >/dev/null || { echo "make-demo: $tool is missing (apt-get install espeak-ng sox)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# emotion|voice|speed wpm|pitch|gap after (s)|text
# Each line carries its emotion in several words (and in no word of another emotion), so one misheard
# word cannot change its label: Whisper's int8 kernels hear the odd word differently on different CPUs
# (tests/stream/test_demo.py checks 7 of 7 under int8 and float32). Speeds stay moderate for clear words.
lines=(
  "joy|en-us+f3|155|75|1.2|This is wonderful news! I am so happy for you, congratulations!"
  "sadness|en-us+m3|130|30|1.4|I feel so sad and lonely. I miss her so much, I can't stop crying."
  "anger|en-us+m1|165|45|1.2|How dare you lie to me again! Shut up, I am sick and tired of your stupid excuses!"
  "fear|en-us+f2|155|70|1.2|I'm scared. Please help me, I'm so afraid, someone is following me."
  "surprise|en-us+f4|155|85|1.2|Whoa! Wait, what? Are you serious? Oh my God!"
  "neutral|en-us|145|50|1.2|The next train leaves at ten o'clock from platform two."
  "disgust|en-us+m2|140|40|1.5|That is disgusting! It smells like rotten garbage. Yuck, how gross!"
)

lead=0.8
sox -R -n -r 16000 -c 1 -b 16 "$tmp/lead.wav" trim 0 "$lead"
parts=("$tmp/lead.wav")
t=$lead
echo "start_s,end_s,text,emotion" > "$tmp/demo.csv"
i=0
for line in "${lines[@]}"; do
  IFS='|' read -r emotion voice speed pitch gap text <<< "$line"
  espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$tmp/raw$i.wav" "$text"
  # 16 kHz mono, leading/trailing silence trimmed so the truth spans are tight.
  sox -R "$tmp/raw$i.wav" -r 16000 -c 1 -b 16 "$tmp/s$i.wav" silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse
  dur=$(soxi -D "$tmp/s$i.wav")
  end=$(awk -v a="$t" -v d="$dur" 'BEGIN { printf "%.3f", a + d }')
  printf '%.3f,%s,"%s",%s\n' "$t" "$end" "$text" "$emotion" >> "$tmp/demo.csv"
  sox -R -n -r 16000 -c 1 -b 16 "$tmp/g$i.wav" trim 0 "$gap"
  parts+=("$tmp/s$i.wav" "$tmp/g$i.wav")
  t=$(awk -v a="$end" -v g="$gap" 'BEGIN { printf "%.3f", a + g }')
  i=$((i + 1))
done

sox -R "${parts[@]}" -r 16000 -c 1 -b 16 "$out/demo.flac"
cp "$tmp/demo.csv" "$out/demo.csv"
echo "make-demo: wrote $out/demo.flac ($(soxi -d "$out/demo.flac"), $(du -h "$out/demo.flac" | cut -f1)) and $out/demo.csv"

#!/usr/bin/env bash
# Regenerates the bundled demo recording that `emostream run` (and `make run`) replays by default:
#   stream/assets/demo.flac  16 kHz mono, seven short dialogue lines of different emotions with gaps
#   stream/assets/demo.csv   the ground truth (start_s,end_s,text,emotion) for `emostream evaluate`
# Needs espeak-ng and sox. The output is deterministic for a given espeak-ng version.
set -euo pipefail

cd "$(dirname "$0")/.."
out=stream/assets
mkdir -p "$out"
for tool in espeak-ng sox soxi; do
  command -v "$tool" >/dev/null || { echo "make-demo: $tool is missing (apt-get install espeak-ng sox)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# emotion|voice|speed wpm|pitch|gap after (s)|text
lines=(
  "joy|en-us+f3|175|75|1.2|I just got the job! I can't believe it, this is the best day of my life!"
  "sadness|en-us+m3|120|30|1.4|I miss her so much. Everything feels empty since she left."
  "anger|en-us+m1|185|45|1.2|You lied to me again! I am sick and tired of your excuses!"
  "fear|en-us+f2|170|70|1.2|Did you hear that? Someone is inside the house. I'm really scared."
  "surprise|en-us+f4|165|85|1.2|Wait, what? You're getting married next week? No way!"
  "neutral|en-us|150|50|1.2|The meeting has been moved to three o'clock on Thursday."
  "disgust|en-us+m2|140|40|1.5|Ugh, that smell is disgusting. I think the milk went bad."
)

lead=0.8
sox -n -r 16000 -c 1 -b 16 "$tmp/lead.wav" trim 0 "$lead"
parts=("$tmp/lead.wav")
t=$lead
echo "start_s,end_s,text,emotion" > "$tmp/demo.csv"
i=0
for line in "${lines[@]}"; do
  IFS='|' read -r emotion voice speed pitch gap text <<< "$line"
  espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$tmp/raw$i.wav" "$text"
  # 16 kHz mono, leading/trailing silence trimmed so the truth spans are tight.
  sox "$tmp/raw$i.wav" -r 16000 -c 1 -b 16 "$tmp/s$i.wav" silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse
  dur=$(soxi -D "$tmp/s$i.wav")
  end=$(awk -v a="$t" -v d="$dur" 'BEGIN { printf "%.3f", a + d }')
  printf '%.3f,%s,"%s",%s\n' "$t" "$end" "$text" "$emotion" >> "$tmp/demo.csv"
  sox -n -r 16000 -c 1 -b 16 "$tmp/g$i.wav" trim 0 "$gap"
  parts+=("$tmp/s$i.wav" "$tmp/g$i.wav")
  t=$(awk -v a="$end" -v g="$gap" 'BEGIN { printf "%.3f", a + g }')
  i=$((i + 1))
done

sox "${parts[@]}" -r 16000 -c 1 -b 16 "$out/demo.flac"
cp "$tmp/demo.csv" "$out/demo.csv"
echo "make-demo: wrote $out/demo.flac ($(soxi -d "$out/demo.flac"), $(du -h "$out/demo.flac" | cut -f1)) and $out/demo.csv"

// node export_check.mjs MODULE_URL EVENTS.json STREAM -> {"srt", "vtt", "csv"} from web/export.js
import { readFileSync } from "node:fs";

const [moduleUrl, eventsPath, stream] = process.argv.slice(2);
const { cuesFromEvents, toSRT, toTableCSV, toVTT } = await import(moduleUrl);
const events = JSON.parse(readFileSync(eventsPath, "utf-8"));
const labels = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"];
const one = cuesFromEvents(events, stream);
process.stdout.write(JSON.stringify({ srt: toSRT(one), vtt: toVTT(one), csv: toTableCSV(cuesFromEvents(events), labels) }));

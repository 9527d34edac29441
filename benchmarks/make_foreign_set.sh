#!/usr/bin/env bash
# Six independent 30-s 320x240 25-fps H.264 files with 44.1 kHz stereo AAC and 2-s key frames, made with
# ffmpeg from different sources (synthetic patterns with grain, a fractal zoom, and three real clips shipped
# with opencv-doc, transcoded), plus their manifest: the "other people's files" of `mmv-torch data bench`
# (benchmarks/RESULTS.md). Usage: benchmarks/make_foreign_set.sh DIR   (~1 min on 2 cores)
set -euo pipefail
out=${1:?usage: $0 DIR}
mkdir -p "$out"
cv=/usr/share/doc/opencv-doc/examples/data
# Common output: x264 veryfast CRF 23 (B frames on), key frame every 50 frames, AAC 44.1 kHz stereo 128k.
enc=(-t 30 -r 25 -s 320x240 -pix_fmt yuv420p -c:v libx264 -preset veryfast -crf 23 -g 50 -keyint_min 50
     -sc_threshold 0 -c:a aac -b:a 128k -ar 44100 -ac 2 -shortest -movflags +faststart -y)
ff() { ffmpeg -hide_banner -loglevel error "$@"; }
ff -f lavfi -i "testsrc2=s=320x240:r=25,noise=alls=12:allf=t" -f lavfi -i "sine=f=440:r=44100" \
   "${enc[@]}" "$out/f1_testsrc2.mp4"
ff -f lavfi -i "mandelbrot=s=320x240:r=25" -f lavfi -i "anoisesrc=c=pink:r=44100:a=0.2" \
   "${enc[@]}" "$out/f2_mandelbrot.mp4"
ff -stream_loop -1 -i "$cv/Megamind.avi" -vf "scale=320:240,fps=25" "${enc[@]}" "$out/f3_megamind.mp4"
ff -stream_loop -1 -i "$cv/tree.avi" -f lavfi -i "sine=f=220:r=44100,volume=0.5" -map 0:v -map 1:a \
   -vf "fps=25" "${enc[@]}" "$out/f4_tree.mp4"
ff -i "$cv/vtest.avi" -f lavfi -i "anoisesrc=c=brown:r=44100:a=0.3" -map 0:v -map 1:a \
   -vf "scale=320:240,fps=25" "${enc[@]}" "$out/f5_vtest.mp4"
ff -f lavfi -i "testsrc2=s=320x240:r=25,hue=H=t/3,noise=alls=25:allf=t+u" \
   -f lavfi -i "sine=f=330:r=44100,aecho=0.8:0.8:60:0.4" "${enc[@]}" "$out/f6_testsrc2_grain.mp4"
for f in "$out"/f*.mp4; do printf '{"video": "%s"}\n' "$(basename "$f")"; done > "$out/manifest.jsonl"
echo "wrote $(wc -l < "$out/manifest.jsonl") files and $out/manifest.jsonl"

BUILD=build-dev OUT=/tmp/t bash scripts/device.sh test >/dev/null 2>&1; cp /tmp/t/summary.txt $OUT/; grep -E "FAILED|Failure" -A3 /tmp/t/gpu_tests.log | head -30
ln -s build-dev build-ab-b
A=-DDSV4_AB_OLD_WORDS B= OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16 >/dev/null
for b in build-ab-a build-dev; do cuobjdump -sass $b/dsv4 >/tmp/all.sass 2>/dev/null
for pat in moe_gemv_kernelILb1ELb1ELi1E moe_gemv_kernelILb1ELb1ELi2E moe_gemv_kernelILb0ELb1ELi4E; do
awk -v p="$pat" '/Function : /{on = index($0, p) > 0} on' /tmp/all.sass >/tmp/s.txt
echo "$b $pat $(grep -c '/\*[0-9a-f]*\*/' /tmp/s.txt) instr: $(grep -o '/\*[0-9a-f]*\*/ *[@!A-Z0-9P]* *[A-Z][A-Z0-9_.]*' /tmp/s.txt | awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -12 | tr '\n' ' ')"
done; done >$OUT/sass.txt
cat $OUT/sass.txt; cat $OUT/model-ab.txt | grep -E "^==|^decode"; tail -8 $OUT/summary.txt

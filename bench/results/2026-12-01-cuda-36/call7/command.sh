A= B=-DDSV4_MOE_L2_AHEAD=1 C=-DDSV4_MOE_L2_AHEAD=2 OUT=$OUT bash scripts/experiments/model_ab.sh --layers 20 --batches 1,8 --contexts 4096 --no-prefill --steps 16 | grep -E "^==|^decode"

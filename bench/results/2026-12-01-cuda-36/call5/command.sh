BUILD=build-dev OUT=/tmp/b bash scripts/device.sh build >/dev/null 2>&1 || { tail -20 /tmp/b/build.log; exit 1; }
BUILDS=build-dev OUT=$OUT bash scripts/experiments/expert_profile.sh

# The step image: `python -m mlsteps <step> ...` in a pod.
# Two variants from one Dockerfile, chosen by XGBOOST_VARIANT:
#   cpu (default): the `xgboost-cpu` wheel (the same `xgboost` module, no CUDA, no NCCL);
#   gpu: PyPI's `xgboost` wheel, built with CUDA, with `nvidia-nccl-cu12`; the node's driver is
#        mounted by the NVIDIA device plugin.
# Build from the repository root:
#   docker build -f docker/step.Dockerfile -t mlsteps:0.1.0 --build-arg GIT_SHA="$(git rev-parse HEAD)" .
#   docker build -f docker/step.Dockerfile -t mlsteps:0.1.0-gpu --build-arg XGBOOST_VARIANT=gpu \
#     --build-arg GIT_SHA="$(git rev-parse HEAD)" .
# Offline or behind a TLS-intercepting proxy: PYTHON_IMAGE names another base, and EXTRA_CA_CERTS
# (PEM text, e.g. --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.pem)") is trusted by the build stage
# only; it never reaches the final image.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
ARG UV_VERSION=0.13.9
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The CA bundle the build trusts: the base's own, plus EXTRA_CA_CERTS when given.
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; printf '%s\n' "$EXTRA_CA_CERTS"; } > /opt/build-ca.pem; \
    else \
      cp /etc/ssl/certs/ca-certificates.crt /opt/build-ca.pem 2>/dev/null \
        || python -c "import pip._vendor.certifi as c, shutil; shutil.copy(c.where(), '/opt/build-ca.pem')"; \
    fi
ENV PIP_CERT=/opt/build-ca.pem \
    SSL_CERT_FILE=/opt/build-ca.pem \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON=/opt/venv/bin/python
# uv resolves with exclusions (pip cannot): it lives in its own venv, outside the one we ship.
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && python -m venv --without-pip /opt/venv
WORKDIR /src
COPY constraints.txt docker/step-excludes.txt ./
COPY include/pyproject.toml include/pyproject.toml
ARG XGBOOST_VARIANT=cpu
# Dependencies first (a layer that survives edits to the code), pinned by constraints.txt. What
# step-excludes.txt lists never enters the image: type checkers, and in the cpu variant the CUDA
# xgboost wheel, replaced by xgboost-cpu at the same version.
RUN xgboost_version="$(sed -n 's/^xgboost==\([^ ]*\).*/\1/p' constraints.txt)" \
    && case "$XGBOOST_VARIANT" in \
         cpu) cp step-excludes.txt excludes.txt && echo "xgboost-cpu==${xgboost_version}" > variant.txt ;; \
         gpu) grep -vx xgboost step-excludes.txt > excludes.txt && : > variant.txt ;; \
         *) echo "XGBOOST_VARIANT must be cpu or gpu, not '$XGBOOST_VARIANT'" >&2 && exit 2 ;; \
       esac \
    && /opt/uv/bin/uv pip install -c constraints.txt --excludes excludes.txt \
         -r include/pyproject.toml -r variant.txt
# Smaller, same behaviour: without the test suites that numpy, pandas & co. ship but never import
# (evidently imports its own, so those stay). Bytecode is compiled here because the root
# filesystem is read-only in a pod (without it every step compiles its imports again, minutes on
# a busy node), except for plotly's 27,000 validator modules, of which a report loads a few.
RUN site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && for package in numpy pandas pyarrow scipy sklearn statsmodels matplotlib; do \
         find "$site/$package" -type d -name tests -prune -exec rm -rf {} +; \
       done \
    && { /opt/venv/bin/python -m compileall -q -j 0 -x '/plotly/validators/' "$site" \
         || echo "the files above did not compile (templates, not modules): they are never imported"; }
# The package itself goes to its own directory, so that the runtime stage copies it as a small
# layer of its own: a code change does not copy the whole environment again.
COPY include/mlsteps include/mlsteps
RUN /opt/uv/bin/uv pip install --compile-bytecode --no-deps --target /opt/mlsteps-package ./include \
    && rm -rf /opt/mlsteps-package/bin \
    && test -d /opt/venv/lib/python3.11/site-packages

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mlsteps" \
      org.opencontainers.image.description="Steps of the scheduled ML workflows (python -m mlsteps)" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 10001 matches the pod securityContext the task factory sets (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 mlsteps \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin mlsteps
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/mlsteps-package /opt/venv/lib/python3.11/site-packages
# Fixed paths, identical in the Airflow image: the worker forwards ML_PIPELINE_CONFIG and
# ML_FEAST_STORE_YAML to the pods, so a path valid there must be valid here.
COPY include/config /opt/mlsteps/config
COPY include/feature_repo /opt/mlsteps/feature_repo
# The root filesystem is read-only in a pod: everything that writes goes to /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    ML_STATE_DIR=/tmp/mlsteps-state \
    ML_PIPELINE_CONFIG=/opt/mlsteps/config/pipeline.yaml \
    ML_FEAST_STORE_YAML=/opt/mlsteps/feature_repo/feature_store.production.yaml
# Last, so that a new commit rebuilds only these layers.
ARG XGBOOST_VARIANT=cpu
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.revision="${GIT_SHA}" \
      org.mlsteps.xgboost-variant="${XGBOOST_VARIANT}"
ENV ML_GIT_SHA=${GIT_SHA}
WORKDIR /tmp
USER 10001:10001
# No ENTRYPOINT: the pod's exec-form `cmds: [python, -m, mlsteps]` replaces this default command.
CMD ["python", "-m", "mlsteps", "--help"]

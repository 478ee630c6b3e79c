#!/usr/bin/env bash
# A shared MLflow tracking server for a team or a cluster: every job logs through it over HTTP,
# so no two nodes write one SQLite file (which a network file system does not lock reliably).
#
#   workflow/mlflow/server.sh start [OPTIONS]  # start `mlflow server`, wait until it answers
#   workflow/mlflow/server.sh status           # the server's PID and URI; exit 0 when it answers
#   workflow/mlflow/server.sh stop             # stop the server this script started, by its PID
#
# start's options (defaults in brackets):
#   --host HOST                 the interface to listen on [127.0.0.1]; 0.0.0.0 for other nodes
#   --port PORT                 [5000]
#   --backend-store-uri URI     runs, metrics and the registry: any SQLAlchemy URI, e.g.
#                               postgresql://mlflow@db/mlflow [sqlite:///STATE/mlflow.db]
#   --artifacts-destination D   where the server keeps artifacts (models, sample grids): a
#                               directory or an s3://... URI [STATE/artifacts]. Clients get
#                               proxied mlflow-artifacts: URIs and never need its file system.
#   --allowed-hosts LIST        Host headers accepted (MLflow's DNS-rebinding guard); on a host
#                               other than 127.0.0.1: this machine's names and addresses
#   --default-permission P      what every user may do with others' experiments and models: READ,
#                               EDIT (log runs into them), MANAGE or NO_PERMISSIONS [EDIT]; their
#                               own they MANAGE. Deleting needs MANAGE.
#   --workers N                 uvicorn workers [MLflow's default]
#   --no-auth                   no authentication: anyone who reaches the port can read, change
#                               and delete every run and model. Authentication (MLflow's
#                               basic-auth app) is on by default, also on 127.0.0.1: every user
#                               of a shared login node reaches localhost.
#
# Where things are (STATE: $SAGAN_MLFLOW_DIR, default mlflow-server/ in the project, git-ignored):
#   server.pid, server.log               the running server: its own process group, which stop
#                                        kills by that PID (uvicorn's workers with it)
#   server.uri, server.probe             its address for users, and where status asks it
#   mlflow.db, artifacts/                the default stores
#   auth.ini, auth.db                    the users and permissions (basic auth)
#   admin-password, secret-key           the admin's password and the key that signs the UI's forms
#                                        (mode 600), made on the first start unless
#                                        MLFLOW_AUTH_ADMIN_PASSWORD / MLFLOW_FLASK_SERVER_SECRET_KEY are set
# Users pass their credentials in the environment only (MLFLOW_TRACKING_USERNAME and
# MLFLOW_TRACKING_PASSWORD), never in params.yaml or any file of the pipeline.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${SAGAN_MLFLOW_DIR:-$ROOT/mlflow-server}"
# The project's pinned MLflow: its venv's (`make install`), else the first on PATH.
MLFLOW="${SAGAN_MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}"
[ -x "$MLFLOW" ] || MLFLOW="$(command -v mlflow || echo "$MLFLOW")"
WAIT_S="${SAGAN_MLFLOW_WAIT_S:-120}"   # MLflow imports its server before it answers: seconds, more on a busy machine

die() { echo "mlflow-server: $*" >&2; exit 1; }
say() { echo "mlflow-server: $*"; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid() { cat "$STATE/server.pid" 2>/dev/null || true; }
uri() { cat "$STATE/server.uri" 2>/dev/null || true; }

answers() {
    # /health answers without credentials, also with authentication on.
    curl --silent --fail --noproxy '*' --max-time 5 -o /dev/null "$1/health"
}

kept_secret() {
    # The value of environment variable $2 if set, else the one kept in STATE/$1, made on first use.
    if [ -n "${!2:-}" ]; then echo "${!2}"; return; fi
    [ -s "$STATE/$1" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$STATE/$1")
    cat "$STATE/$1"
}

start() {
    local host=127.0.0.1 port=5000 store="" artifacts="" allowed="" permission=EDIT workers="" auth=1
    while [ $# -gt 0 ]; do
        case "$1" in
            --host) host="$2"; shift 2 ;;
            --port) port="$2"; shift 2 ;;
            --backend-store-uri) store="$2"; shift 2 ;;
            --artifacts-destination) artifacts="$2"; shift 2 ;;
            --allowed-hosts) allowed="$2"; shift 2 ;;
            --default-permission) permission="$2"; shift 2 ;;
            --workers) workers="$2"; shift 2 ;;
            --no-auth) auth=0; shift ;;
            *) die "unknown option '$1' (see the top of $0)" ;;
        esac
    done
    case "$permission" in READ | EDIT | MANAGE | NO_PERMISSIONS) ;; *) die "--default-permission: READ, EDIT, MANAGE or NO_PERMISSIONS, not '$permission'" ;; esac
    if alive "$(pid)"; then
        say "already running (pid $(pid)) at $(uri); state in $STATE"
        return
    fi
    [ -x "$MLFLOW" ] || die "no MLflow at $MLFLOW: run \`make install\` (or set SAGAN_MLFLOW_BIN)"
    mkdir -p "$STATE"
    chmod 700 "$STATE"   # the stores, the admin password and the log: the server's alone
    store="${store:-sqlite:///$STATE/mlflow.db}"
    artifacts="${artifacts:-$STATE/artifacts}"
    local shown="$host"
    case "$host" in
        127.0.0.1 | localhost) ;;
        *)
            [ "$host" = 0.0.0.0 ] && shown="$(hostname -f 2>/dev/null || hostname)"
            if [ -z "$allowed" ]; then
                local name
                for name in localhost 127.0.0.1 "$host" "$(hostname -s)" "$(hostname -f 2>/dev/null || hostname)" \
                            $(hostname -I 2>/dev/null || true); do
                    allowed="${allowed:+$allowed,}$name,$name:*"
                done
            fi ;;
    esac
    local url="http://$shown:$port" probe="http://$host:$port"
    [ "$host" = 0.0.0.0 ] && probe="http://127.0.0.1:$port"   # every interface: this one too, whatever DNS says
    answers "$probe" && die "something else answers at $probe already; choose another --port"

    local args=(server --backend-store-uri "$store" --artifacts-destination "$artifacts"
                --host "$host" --port "$port")
    [ -n "$allowed" ] && args+=(--allowed-hosts "$allowed")
    [ -n "$workers" ] && args+=(--workers "$workers")
    if [ "$auth" = 1 ]; then
        args+=(--app-name basic-auth)
        export MLFLOW_AUTH_CONFIG_PATH="$STATE/auth.ini"
        cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = $permission
database_uri = sqlite:///$STATE/auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# A checked password is trusted for 60 s, not hashed again (PBKDF2) on every request of a job
# (a changed password reaches other workers within that time).
auth_cache_ttl_seconds = 60
EOF
        # MLflow creates the admin on its first start, from MLFLOW_AUTH_ADMIN_PASSWORD (it ships no
        # default password), and signs its forms (CSRF) with MLFLOW_FLASK_SERVER_SECRET_KEY: both
        # made here once unless set, and kept for restarts.
        [ -e "$STATE/auth.db" ] || MLFLOW_AUTH_ADMIN_PASSWORD="$(kept_secret admin-password MLFLOW_AUTH_ADMIN_PASSWORD)"
        MLFLOW_FLASK_SERVER_SECRET_KEY="$(kept_secret secret-key MLFLOW_FLASK_SERVER_SECRET_KEY)"
        export MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    # The GenAI job runner is of no use to this pipeline: left out, as `make ui` does.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
    echo "$url" >"$STATE/server.uri"
    echo "$probe" >"$STATE/server.probe"
    # setsid: a process group of its own, so that stop ends the workers with it, and a Ctrl-C in
    # this shell does not.
    setsid "$MLFLOW" "${args[@]}" >"$STATE/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/server.pid"
    local deadline=$((SECONDS + WAIT_S))
    until answers "$probe"; do
        if ! alive "$(pid)"; then
            tail -n 20 "$STATE/server.log" >&2
            rm -f "$STATE/server.pid"
            die "the server exited before answering (log: $STATE/server.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$STATE/server.log" >&2
            stop_server
            die "no answer at $probe within $WAIT_S s (log: $STATE/server.log)"
        fi
        sleep 0.5
    done
    say "running (pid $(pid)) at $url: store $store, artifacts $artifacts; state and log in $STATE"
    echo "  export MLFLOW_TRACKING_URI=$url"
    if [ "$auth" = 1 ]; then
        echo "  export MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>  # in the shell or job, never in params.yaml"
        if [ -s "$STATE/admin-password" ]; then
            echo "  admin: user 'admin', password in $STATE/admin-password; users are created by the admin (docs: cluster guide)"
        fi
    else
        echo "  WARNING: no authentication (--no-auth): anyone who reaches $url can read, change and delete every run"
    fi
}

stop_server() {
    local p i
    p="$(pid)"
    if alive "$p"; then
        say "stopping the server (pid $p and its workers)"
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
        for i in $(seq 100); do alive "$p" || break; sleep 0.1; done
        alive "$p" && { kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; }
    fi
    rm -f "$STATE/server.pid"
}

stop() {
    stop_server
    say "stopped (stores and log kept in $STATE)"
}

status() {
    local p
    p="$(pid)"
    if alive "$p" && answers "$(cat "$STATE/server.probe")"; then
        echo "mlflow server: running (pid $p) at $(uri); state in $STATE"
        echo "  export MLFLOW_TRACKING_URI=$(uri)"
        return 0
    fi
    if alive "$p"; then echo "mlflow server: pid $p does not answer at $(uri) (log: $STATE/server.log)"
    else echo "mlflow server: not running (start: $0 start)"; fi
    return 1
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start [--host H] [--port P] [--backend-store-uri URI] [--artifacts-destination D] [--no-auth] ...|stop|status" >&2; exit 2 ;;
esac

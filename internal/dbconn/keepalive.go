package dbconn

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// TCP keepalives on every connection, tsmigrate's own and those of pg_dump and
// pg_restore: a server that vanished without closing the connection (a crash of its
// machine, a network partition, a NAT or firewall that forgot the flow) is noticed
// within about Idle + Count × Interval, instead of never on an idle connection waiting
// for a long statement's result (or after the system's two hours for libpq's). The
// libpq keywords keepalives, keepalives_idle, keepalives_interval and keepalives_count
// (seconds) change them, as they do for psql.
const (
	DefaultKeepalivesIdle     = 30 * time.Second
	DefaultKeepalivesInterval = 10 * time.Second
	DefaultKeepalivesCount    = 3
)

// keepaliveKeys are libpq's keepalive keywords, which pgx does not know (it would send
// them to the server as settings).
var keepaliveKeys = []string{"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}

// keepalives reads the keepalive keywords of params over the defaults.
func keepalives(params map[string]string) (net.KeepAliveConfig, error) {
	kc := net.KeepAliveConfig{Enable: true, Idle: DefaultKeepalivesIdle, Interval: DefaultKeepalivesInterval, Count: DefaultKeepalivesCount}
	for _, k := range keepaliveKeys {
		v, ok := params[k]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return kc, fmt.Errorf("%s=%q is not a whole number of 0 or more", k, v)
		}
		switch k {
		case "keepalives":
			kc.Enable = n != 0
		case "keepalives_idle":
			kc.Idle = time.Duration(n) * time.Second // 0: the system's default, as in libpq
		case "keepalives_interval":
			kc.Interval = time.Duration(n) * time.Second
		case "keepalives_count":
			kc.Count = n
		}
	}
	if kc.Count == 0 {
		kc.Count = -1 // the system's default
	}
	if kc.Idle == 0 {
		kc.Idle = -1
	}
	if kc.Interval == 0 {
		kc.Interval = -1
	}
	return kc, nil
}

// childKeepalives adds to a child's keywords the default keepalives the user did not set.
func childKeepalives(p map[string]string) {
	for k, v := range map[string]string{
		"keepalives_idle":     strconv.Itoa(int(DefaultKeepalivesIdle / time.Second)),
		"keepalives_interval": strconv.Itoa(int(DefaultKeepalivesInterval / time.Second)),
		"keepalives_count":    strconv.Itoa(DefaultKeepalivesCount),
	} {
		if _, set := p[k]; !set {
			p[k] = v
		}
	}
}

package verify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Keys are some rows of a plain table, named by the values of key columns (a primary
// key or a unique index's, NOT NULL): the rows a live migration's changes were
// applied to, compared again at its cut-over instead of the whole table.
type Keys struct {
	// Columns are the key's columns, Values each row's key: the columns' values as
	// text (as the type's output prints them), in Columns' order.
	Columns []string
	Values  [][]string
}

// keyRowsSQL selects the rows whose key is one of a JSON array of keys (arrays of
// text), each value cast to its column's type on that side, so that the type's
// equality finds the row (through the key's index). Checked on PostgreSQL 15 and 17.
const keyRowsSQL = `(%s) IN (SELECT %s FROM jsonb_array_elements(%s::jsonb) AS k(v))`

// restrictToKeys makes the units of plain tables in keys compare only the rows of
// those keys, on both sides (Unit.KeyRows). A table that lacks a key column on a side
// is compared whole (the schema comparison shows the difference).
func restrictToKeys(units []*plan, src, tgt *contents, keys map[string]*Keys) error {
	if len(keys) == 0 {
		return nil
	}
	sides := map[string][2]*table{}
	for i, inv := range []*contents{src, tgt} {
		for n, tb := range inv.tables {
			s := sides[n.displayName()]
			s[i] = tb
			sides[n.displayName()] = s
		}
	}
	for _, p := range units {
		k := keys[p.Table]
		if p.Kind != "table" || p.Aggregate || k == nil || len(k.Columns) == 0 {
			continue
		}
		values, err := json.Marshal(k.Values)
		if err != nil {
			return err
		}
		tbs := sides[p.Table]
		var where [2]string
		ok := true
		for i, tb := range tbs {
			if tb == nil || tb.hyper != nil {
				ok = ok && tb == nil
				continue
			}
			cond, has := keyCondition(tb, k, sqltext.Literal(string(values)))
			if !has {
				ok = false
				break
			}
			where[i] = cond
		}
		if !ok {
			continue
		}
		for i := range where {
			if where[i] != "" {
				p.where[i] = where[i]
			}
		}
		p.KeyRows = len(k.Values)
		p.pages = 0
	}
	return nil
}

// keyCondition is the row filter of k's rows in tb, keys the SQL literal of their JSON
// array; false when tb lacks a key column.
func keyCondition(tb *table, k *Keys, keys string) (string, bool) {
	types := map[string]string{}
	for _, c := range tb.columns {
		types[c.name] = c.typ
	}
	var cols, casts []string
	for i, name := range k.Columns {
		typ, ok := types[name]
		if !ok {
			return "", false
		}
		cols = append(cols, "t."+quoteIdent(name))
		casts = append(casts, "CAST(k.v->>"+strconv.Itoa(i)+" AS "+typ+")")
	}
	return fmt.Sprintf(keyRowsSQL, strings.Join(cols, ", "), strings.Join(casts, ", "), keys), true
}

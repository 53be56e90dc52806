package postgres

import (
	"context"
	stdsql "database/sql"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// finishTimeout bounds the acknowledgement and commit of a forwarder's read
// once the forwarder is closing.
const finishTimeout = 5 * time.Second

// finishingBeginner is the forwarder's database handle: its transactions
// run their reads with the subscriber's context, but write their
// acknowledgement and commit with a context that closing the forwarder does
// not cancel (bounded by finishTimeout). watermill-sql's Subscriber cancels
// its context on Close and would then fail to record the rows it had just
// forwarded, so every clean shutdown would forward its last batch again;
// with this, only a crash does.
type finishingBeginner struct{ wsql.Beginner }

func (b finishingBeginner) BeginTx(ctx context.Context, opts *stdsql.TxOptions) (wsql.Tx, error) {
	tx, err := b.Beginner.BeginTx(context.WithoutCancel(ctx), opts)
	if err != nil {
		return nil, err
	}
	return finishingTx{tx}, nil
}

type finishingTx struct{ wsql.Tx }

// ExecContext runs the acknowledgement (the only write of a read).
func (t finishingTx) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	return t.Tx.ExecContext(ctx, query, args...)
}

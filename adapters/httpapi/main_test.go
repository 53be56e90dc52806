package httpapi_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(httpapitest.RemoveBuildAfter(m)) }

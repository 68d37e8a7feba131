// Added to kube-network-policies' own source by tests/k8s/build_binaries.sh, which points both of
// the controller's queue verdicts at xtNFQueue instead of nft's queue expression.

package networkpolicy

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// xtNFQueue is iptables' NFQUEUE target, revision 3 (struct xt_NFQ_info_v3), through nft_compat:
// the same verdict as nft's queue expression, for kernels built without nft_queue (this machine's
// has xt_NFQUEUE only).
func xtNFQueue(num uint16, bypass bool) expr.Any {
	info := make([]byte, 8) // queuenum, queues_total, flags, padded to XT_ALIGN
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 1) // NFQ_FLAG_BYPASS
	}
	payload := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &payload}
}
